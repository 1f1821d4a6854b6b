package model

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Codecs maps application protocols, in lower case ("dubbo"), to the names of the codecs that speak
// them ("aeraki.meta_protocol.codec.dubbo").
type Codecs map[string]string

// PortRule says which rule made a port a meta-protocol port.
type PortRule string

// The rules of ClassifyPort.
const (
	// RuleNone: the port is not a meta-protocol port.
	RuleNone PortRule = ""
	// RulePortName: the port's name is tcp-metaprotocol-<app>[-...], tcp-dubbo[-...] or tcp-thrift[-...].
	RulePortName PortRule = "name"
	// RuleAppProtocol: the port's appProtocol is <app> or metaprotocol-<app>.
	RuleAppProtocol PortRule = "appProtocol"
)

// PortProtocol is what ClassifyPort found.
type PortProtocol struct {
	// App is the application protocol in lower case ("dubbo"); empty for a port that is not a
	// meta-protocol port.
	App string
	// Codec is the name of the codec that speaks App.
	Codec string
	// Rule is the rule that matched.
	Rule PortRule
}

// MetaProtocol reports whether the port is a meta-protocol port.
func (p PortProtocol) MetaProtocol() bool { return p.App != "" }

// leftAlone are protocols that Aeraki serves with dedicated filters and Meltemi does not serve yet;
// their ports are not meta-protocol ports whatever codecs exist.
var leftAlone = []string{"redis", "kafka", "zookeeper"}

// ClassifyPort tells whether a port is a meta-protocol port and which codec serves it.
//
// A port name is split on '-' as Aeraki does: tcp-metaprotocol-<app>[-...] names <app>, and
// tcp-dubbo[-...] and tcp-thrift[-...] name dubbo and thrift (which Aeraki hands to Envoy's own
// filters and Meltemi serves with its codecs). Failing that, appProtocol (a Kubernetes Service port's
// appProtocol, or a ServiceEntry port's protocol) that is metaprotocol-<app>, or that is <app> itself
// when a codec exists for it, names <app>. Matching ignores case. A name or appProtocol that asks for
// a meta-protocol whose <app> has no codec is an error; a bare appProtocol with no codec (TCP, HTTP)
// only means the port is not a meta-protocol port. Ports of redis, kafka and zookeeper are left alone.
func ClassifyPort(name, appProtocol string, codecs Codecs) (PortProtocol, error) {
	app, err := appFromPortName(name)
	if err != nil {
		return PortProtocol{}, err
	}
	rule := RulePortName
	if app == "" {
		rule = RuleAppProtocol
		app, err = appFromAppProtocol(appProtocol, codecs)
		if err != nil {
			return PortProtocol{}, err
		}
	}
	if app == "" || slices.Contains(leftAlone, app) {
		return PortProtocol{}, nil
	}
	codec, ok := codecs[app]
	if !ok {
		return PortProtocol{}, errNoCodec(app, codecs)
	}
	return PortProtocol{App: app, Codec: codec, Rule: rule}, nil
}

// appFromPortName returns the application protocol a port name asks for, "" when it asks for none,
// and redis/kafka/zookeeper as themselves so that the caller leaves the port alone.
func appFromPortName(name string) (string, error) {
	tokens := strings.Split(strings.ToLower(name), "-")
	if len(tokens) < 2 || tokens[0] != "tcp" {
		return "", nil
	}
	switch proto := tokens[1]; {
	case proto == "metaprotocol":
		// Aeraki reads tokens[2] after checking only that there are two tokens; a name that stops at
		// "tcp-metaprotocol" is a mistake to report, not an index to read past.
		if len(tokens) < 3 || tokens[2] == "" {
			return "", fmt.Errorf("port name %q names no application protocol: tcp-metaprotocol-<app>[-suffix] is expected", name)
		}
		return tokens[2], nil
	case proto == "dubbo", proto == "thrift", slices.Contains(leftAlone, proto):
		return proto, nil
	}
	return "", nil
}

func appFromAppProtocol(appProtocol string, codecs Codecs) (string, error) {
	ap := strings.ToLower(strings.TrimSpace(appProtocol))
	if app, ok := strings.CutPrefix(ap, "metaprotocol-"); ok {
		if app == "" {
			return "", fmt.Errorf("appProtocol %q names no application protocol: metaprotocol-<app> is expected", appProtocol)
		}
		if _, known := codecs[app]; !known && !slices.Contains(leftAlone, app) {
			return "", errNoCodec(app, codecs)
		}
		return app, nil
	}
	if _, known := codecs[ap]; known || slices.Contains(leftAlone, ap) {
		return ap, nil
	}
	return "", nil
}

func errNoCodec(app string, codecs Codecs) error {
	known := "none"
	if len(codecs) > 0 {
		known = strings.Join(slices.Sorted(maps.Keys(codecs)), ", ")
	}
	return fmt.Errorf("application protocol %q has no codec (known: %s); an ApplicationProtocol can declare one", app, known)
}
