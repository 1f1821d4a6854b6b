package localratelimit

import (
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meltemi-mesh/meltemi/codec"
)

func TestMatcher(t *testing.T) {
	// Request metadata for every case: method=sayHello, env=Canary-EU, n=42, empty="".
	md := &codec.Metadata{}
	md.Set("method", "sayHello")
	md.Set("env", "Canary-EU")
	md.Set("n", "42")
	md.Set("empty", "")
	tests := []struct {
		matcher string // an Envoy HeaderMatcher in protobuf JSON
		want    bool
	}{
		// No value form means "present".
		{`{"name":"method"}`, true},
		{`{"name":"missing"}`, false},
		{`{"name":"missing","invertMatch":true}`, true},

		{`{"name":"method","presentMatch":true}`, true},
		{`{"name":"missing","presentMatch":true}`, false},
		{`{"name":"missing","presentMatch":false}`, true},
		{`{"name":"method","presentMatch":false}`, false},
		{`{"name":"method","presentMatch":true,"invertMatch":true}`, false},
		{`{"name":"missing","presentMatch":true,"invertMatch":true}`, true},
		{`{"name":"missing","presentMatch":false,"invertMatch":true}`, false},

		{`{"name":"method","stringMatch":{"exact":"sayHello"}}`, true},
		{`{"name":"method","stringMatch":{"exact":"sayhello"}}`, false},
		{`{"name":"method","stringMatch":{"exact":"sayhello","ignoreCase":true}}`, true},
		{`{"name":"method","stringMatch":{"exact":"say"}}`, false},
		{`{"name":"method","stringMatch":{"exact":"bye"},"invertMatch":true}`, true},
		{`{"name":"method","stringMatch":{"exact":"sayHello"},"invertMatch":true}`, false},
		// As in Envoy, invert_match never makes an absent key match a value matcher.
		{`{"name":"missing","stringMatch":{"exact":"x"},"invertMatch":true}`, false},
		{`{"name":"empty","stringMatch":{"exact":""}}`, true},
		{`{"name":"missing","stringMatch":{"exact":""}}`, false},
		{`{"name":"missing","stringMatch":{"exact":""},"treatMissingHeaderAsEmpty":true}`, true},
		{`{"name":"missing","stringMatch":{"exact":"x"},"treatMissingHeaderAsEmpty":true,"invertMatch":true}`, true},
		{`{"name":"missing","presentMatch":true,"treatMissingHeaderAsEmpty":true}`, true},

		{`{"name":"env","stringMatch":{"prefix":"Canary"}}`, true},
		{`{"name":"env","stringMatch":{"prefix":"canary"}}`, false},
		{`{"name":"env","stringMatch":{"prefix":"canary","ignoreCase":true}}`, true},
		{`{"name":"env","stringMatch":{"suffix":"-EU"}}`, true},
		{`{"name":"env","stringMatch":{"suffix":"-eu","ignoreCase":true}}`, true},
		{`{"name":"env","stringMatch":{"suffix":"-US"}}`, false},
		{`{"name":"env","stringMatch":{"contains":"ry-E"}}`, true},
		{`{"name":"env","stringMatch":{"contains":"RY-e","ignoreCase":true}}`, true},
		{`{"name":"env","stringMatch":{"contains":"xyz"}}`, false},
		// Regexes match the whole value, and ignore_case does not apply to them (Envoy's rule).
		{`{"name":"env","stringMatch":{"safeRegex":{"regex":"Canary-(EU|US)"}}}`, true},
		{`{"name":"env","stringMatch":{"safeRegex":{"regex":"Canary"}}}`, false},
		{`{"name":"env","stringMatch":{"safeRegex":{"regex":"canary-eu"},"ignoreCase":true}}`, false},
		{`{"name":"env","stringMatch":{"safeRegex":{"regex":"Canary|Canary-EU"}}}`, true},

		// Deprecated forms, which Aeraki's older control planes write.
		{`{"name":"method","exactMatch":"sayHello"}`, true},
		{`{"name":"method","exactMatch":"bye"}`, false},
		{`{"name":"method","exactMatch":""}`, true}, // Envoy: any value
		{`{"name":"env","prefixMatch":"Can"}`, true},
		{`{"name":"env","suffixMatch":"EU"}`, true},
		{`{"name":"env","containsMatch":"nary"}`, true},
		{`{"name":"env","safeRegexMatch":{"regex":"C.*U"}}`, true},
		{`{"name":"env","safeRegexMatch":{"regex":"C"}}`, false},

		{`{"name":"n","rangeMatch":{"start":40,"end":43}}`, true},
		{`{"name":"n","rangeMatch":{"start":40,"end":42}}`, false}, // end is exclusive
		{`{"name":"n","rangeMatch":{"start":42,"end":43},"invertMatch":true}`, false},
		{`{"name":"env","rangeMatch":{"start":0,"end":100}}`, false}, // not a number
	}
	for _, tt := range tests {
		h := &routev3.HeaderMatcher{}
		if err := protojson.Unmarshal([]byte(tt.matcher), h); err != nil {
			t.Fatalf("%s: %v", tt.matcher, err)
		}
		m, err := compileMatcher(h)
		if err != nil {
			t.Errorf("%s: %v", tt.matcher, err)
			continue
		}
		if got := m.matches(md); got != tt.want {
			t.Errorf("%s matches = %v, want %v", tt.matcher, got, tt.want)
		}
	}
}

// loader is a codec.Loader that adds an attachment on first use, as the Dubbo codec does.
type loader struct{ calls int }

func (l *loader) LoadMetadata(msg *codec.Message) error {
	l.calls++
	msg.Metadata.Add("env", "canary")
	return nil
}

func TestMatcherLoadsDeferredMetadata(t *testing.T) {
	l, _ := newTestFilter(t, `{"conditions":[{"match":{"metadata":[{"name":"env","exactMatch":"canary"}]},
		"tokenBucket":{"maxTokens":1,"fillInterval":"3600s"}}]}`)
	ex := request("method", "m")
	ld := &loader{}
	ex.msg.Metadata.Defer(ld, &ex.msg)
	if !allowed(t, l, ex) || allowed(t, l, ex) {
		t.Error("the condition on a deferred key did not select its bucket")
	}
	if ld.calls != 1 {
		t.Errorf("loader ran %d times, want 1", ld.calls)
	}
}
