package headermatch

import (
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
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
		m, err := Compile(h)
		if err != nil {
			t.Errorf("%s: %v", tt.matcher, err)
			continue
		}
		if got := m.Matches(md); got != tt.want {
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

func TestAll(t *testing.T) {
	compile := func(t *testing.T, js ...string) All {
		t.Helper()
		var hs []*routev3.HeaderMatcher
		for _, j := range js {
			h := &routev3.HeaderMatcher{}
			if err := protojson.Unmarshal([]byte(j), h); err != nil {
				t.Fatal(err)
			}
			hs = append(hs, h)
		}
		a, err := CompileAll(hs)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	msg := &codec.Message{}
	msg.Metadata.Set("method", "sayHello")
	ld := &loader{}
	msg.Metadata.Defer(ld, msg)
	tests := []struct {
		name     string
		matchers []string
		want     bool
	}{
		{"no matchers: every request", nil, true},
		{"all hold", []string{`{"name":"method","exactMatch":"sayHello"}`, `{"name":"env","exactMatch":"canary"}`}, true},
		{"one fails", []string{`{"name":"method","exactMatch":"sayHello"}`, `{"name":"env","exactMatch":"prod"}`}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := compile(t, tt.matchers...).Matches(&msg.Metadata); got != tt.want {
				t.Errorf("Matches = %v, want %v", got, tt.want)
			}
		})
	}
	if ld.calls != 1 {
		t.Errorf("the deferred metadata was loaded %d times, want once", ld.calls)
	}
}

func TestCompileAllErrors(t *testing.T) {
	hs := []*routev3.HeaderMatcher{{Name: "ok"}, {}, {Name: "re", HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{
		SafeRegexMatch: &matcherv3.RegexMatcher{Regex: "("}}}}
	_, err := CompileAll(hs)
	if err == nil {
		t.Fatal("bad matchers accepted")
	}
	for _, want := range []string{"metadata[1].name: required", "metadata[2].safeRegexMatch.regex: bad regex"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}
