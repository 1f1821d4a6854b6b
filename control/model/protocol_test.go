package model_test

import (
	"strings"
	"testing"

	"github.com/meltemi-mesh/meltemi/control/model"
)

func TestClassifyPort(t *testing.T) {
	codecs := model.Codecs{
		"dubbo": "aeraki.meta_protocol.codec.dubbo",
		"brpc":  "aeraki.meta_protocol.codec.brpc", // as if an ApplicationProtocol declared it
	}
	tests := []struct {
		name, port, appProtocol string
		wantApp                 string
		wantRule                model.PortRule
		wantErr                 string // a substring of the error; empty for none
	}{
		// Port names.
		{name: "metaprotocol name", port: "tcp-metaprotocol-dubbo", wantApp: "dubbo", wantRule: model.RulePortName},
		{name: "metaprotocol name with suffix", port: "tcp-metaprotocol-brpc-hello-server", wantApp: "brpc", wantRule: model.RulePortName},
		{name: "name case is ignored", port: "TCP-MetaProtocol-Dubbo", wantApp: "dubbo", wantRule: model.RulePortName},
		{name: "tcp-dubbo", port: "tcp-dubbo", wantApp: "dubbo", wantRule: model.RulePortName},
		{name: "tcp-dubbo with suffix", port: "tcp-dubbo-20880", wantApp: "dubbo", wantRule: model.RulePortName},
		{name: "tcp-thrift without a thrift codec", port: "tcp-thrift", wantErr: `"thrift" has no codec`},
		{name: "Aeraki's two-token case is an error, not a crash", port: "tcp-metaprotocol", wantErr: "names no application protocol"},
		{name: "empty app token", port: "tcp-metaprotocol-", wantErr: "names no application protocol"},
		{name: "unknown app in name", port: "tcp-metaprotocol-nosuch", wantErr: `"nosuch" has no codec (known: brpc, dubbo)`},
		{name: "redis is left alone", port: "tcp-redis"},
		{name: "kafka is left alone", port: "tcp-kafka-broker"},
		{name: "zookeeper is left alone", port: "tcp-zookeeper"},
		{name: "redis name wins over appProtocol", port: "tcp-redis", appProtocol: "metaprotocol-dubbo"},
		{name: "plain tcp", port: "tcp"},
		{name: "http name", port: "http-web"},
		{name: "other first token", port: "grpc-dubbo"},
		{name: "app alone is not the rule", port: "dubbo"},
		// appProtocol (a ServiceEntry port's protocol, a Kubernetes port's appProtocol).
		{name: "bare app", port: "rpc", appProtocol: "dubbo", wantApp: "dubbo", wantRule: model.RuleAppProtocol},
		{name: "bare app, any case", port: "rpc", appProtocol: "DUBBO", wantApp: "dubbo", wantRule: model.RuleAppProtocol},
		{name: "metaprotocol-app", port: "rpc", appProtocol: "metaprotocol-dubbo", wantApp: "dubbo", wantRule: model.RuleAppProtocol},
		{name: "metaprotocol-app, any case", port: "rpc", appProtocol: "MetaProtocol-BRPC", wantApp: "brpc", wantRule: model.RuleAppProtocol},
		{name: "declared app without name rule", port: "", appProtocol: "brpc", wantApp: "brpc", wantRule: model.RuleAppProtocol},
		{name: "metaprotocol-unknown", port: "rpc", appProtocol: "metaprotocol-nosuch", wantErr: `"nosuch" has no codec`},
		{name: "metaprotocol- without app", port: "rpc", appProtocol: "metaprotocol-", wantErr: "names no application protocol"},
		{name: "bare unknown is just not meta", port: "rpc", appProtocol: "TCP"},
		{name: "kubernetes appProtocol", port: "web", appProtocol: "kubernetes.io/h2c"},
		{name: "redis appProtocol is left alone", port: "cache", appProtocol: "redis"},
		{name: "metaprotocol-redis is left alone", port: "cache", appProtocol: "metaprotocol-redis"},
		{name: "name wins over appProtocol", port: "tcp-dubbo", appProtocol: "metaprotocol-brpc", wantApp: "dubbo", wantRule: model.RulePortName},
		{name: "name without rule falls back to appProtocol", port: "tcp-main", appProtocol: "metaprotocol-brpc", wantApp: "brpc", wantRule: model.RuleAppProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := model.ClassifyPort(tt.port, tt.appProtocol, codecs)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if got.App != tt.wantApp || got.Rule != tt.wantRule || got.MetaProtocol() != (tt.wantApp != "") {
				t.Errorf("got %+v, want app %q rule %q", got, tt.wantApp, tt.wantRule)
			}
			if tt.wantApp != "" && got.Codec != codecs[tt.wantApp] {
				t.Errorf("codec = %q, want %q", got.Codec, codecs[tt.wantApp])
			}
		})
	}
}

func TestClassifyPortWithThriftCodec(t *testing.T) {
	got, err := model.ClassifyPort("tcp-thrift-hello", "", model.Codecs{"thrift": "aeraki.meta_protocol.codec.thrift"})
	if err != nil || got.App != "thrift" || got.Codec != "aeraki.meta_protocol.codec.thrift" {
		t.Errorf("got %+v, %v; want thrift", got, err)
	}
}
