package sniff_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/codec/brpc"
	"github.com/meltemi-mesh/meltemi/codec/codectest"
	"github.com/meltemi-mesh/meltemi/codec/dubbo"
	"github.com/meltemi-mesh/meltemi/codec/sniff"
	"github.com/meltemi-mesh/meltemi/codec/thrift"
	"github.com/meltemi-mesh/meltemi/codec/trpc"
)

func builtins() []codec.Registration {
	return []codec.Registration{dubbo.Registration(), thrift.Registration(), brpc.Registration(), trpc.Registration()}
}

func factory(t testing.TB, config string) codec.Factory {
	t.Helper()
	f, err := sniff.Registration(builtins()...).New(json.RawMessage(config))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestChoosesByFirstBytes: each protocol's opening decodes as that protocol's request on one sniffing listener,
// and other protocols' openings are refused.
func TestChoosesByFirstBytes(t *testing.T) {
	f := factory(t, "")
	want := map[string]string{ // the metadata each opening must decode to
		"dubbo":          "m",
		"thrift-binary":  "ping",
		"thrift-framed":  "ping",
		"thrift-compact": "ping",
		"thrift-header":  "ping",
		"brpc":           "m",
		"trpc":           "/p.S/M",
	}
	key := func(name string) string {
		switch {
		case name == "trpc":
			return trpc.KeyFunc
		default:
			return "method"
		}
	}
	for _, p := range codectest.Preambles() {
		t.Run(p.Name, func(t *testing.T) {
			c := f.NewCodec(codec.Downstream)
			var msg codec.Message
			n, err := c.Decode(append([]byte(nil), p.Frame...), &msg)
			method, known := want[p.Name]
			if !known {
				var fe *codec.FrameError
				if !errors.As(err, &fe) || !strings.Contains(fe.Reason, "none of the protocols") {
					t.Fatalf("Decode = %d, %v; want a frame error naming no protocol", n, err)
				}
				return
			}
			if err != nil || n != len(p.Frame) {
				t.Fatalf("Decode = %d, %v; want %d, nil", n, err, len(p.Frame))
			}
			if got, _ := msg.Metadata.Get(key(p.Name)); got != method {
				t.Errorf("%s = %q; want %q", key(p.Name), got, method)
			}
			// Every later frame goes to the same codec, and its error replies are the protocol's.
			reply, _ := c.ErrorReply(nil, &msg, codec.RouteNotFound, "no route")
			if msg.Type == codec.Request && len(reply) == 0 {
				t.Errorf("no error reply to a two-way request")
			}
		})
	}
}

// TestPartialOpening: too few bytes to tell is ErrIncomplete, not a refusal.
func TestPartialOpening(t *testing.T) {
	f := factory(t, "")
	for _, p := range codectest.Preambles("http1", "http2", "tls", "redis") {
		for cut := 0; cut < min(len(p.Frame), 2); cut++ {
			var msg codec.Message
			if _, err := f.NewCodec(codec.Downstream).Decode(p.Frame[:cut], &msg); err != codec.ErrIncomplete {
				t.Errorf("%s cut at %d: %v; want ErrIncomplete", p.Name, cut, err)
			}
		}
	}
}

// TestConfig: a listed codec must exist and be able to sniff; the list narrows the candidates.
func TestConfig(t *testing.T) {
	reg := sniff.Registration(builtins()...)
	if _, err := reg.New(json.RawMessage(`{"codecs": ["aeraki.meta_protocol.codec.nope"]}`)); err == nil ||
		!strings.Contains(err.Error(), "codecs[0]") {
		t.Errorf("unknown codec: %v", err)
	}
	if _, err := reg.New(json.RawMessage(`{"codec": []}`)); err == nil || !strings.Contains(err.Error(), "codec") {
		t.Errorf("unknown field: %v", err)
	}
	f := factory(t, `{"codecs": ["`+thrift.Name+`"]}`)
	var msg codec.Message
	brpcOpening := codectest.Preambles()[9]
	if brpcOpening.Name != "brpc" {
		t.Fatalf("preamble order changed: %s", brpcOpening.Name)
	}
	if _, err := f.NewCodec(codec.Downstream).Decode(brpcOpening.Frame, &msg); err == nil {
		t.Error("a thrift-only listener decoded bRPC")
	}
	if !f.Properties().Multiplexing {
		t.Error("thrift multiplexes")
	}
}

// FuzzDecode: arbitrary first bytes never panic and never yield a frame longer than the input.
func FuzzDecode(f *testing.F) {
	for _, p := range codectest.Preambles() {
		f.Add(p.Frame)
	}
	fac := factory(f, "")
	f.Fuzz(func(t *testing.T, data []byte) {
		c := fac.NewCodec(codec.Downstream)
		for len(data) > 0 {
			var msg codec.Message
			n, err := c.Decode(data, &msg)
			if err != nil {
				return
			}
			if n <= 0 || n > len(data) {
				t.Fatalf("Decode returned %d for %d bytes", n, len(data))
			}
			c.ErrorReply(nil, &msg, codec.RouteNotFound, "x")
			data = data[n:]
		}
	})
}

// TestConformance runs the kit on the sniffing codec once per protocol, with that protocol's opening as the
// connection's only kind of frame: once chosen, the codec must keep every contract of the codec it chose.
func TestConformance(t *testing.T) {
	for _, tc := range []struct {
		preamble string
		mutable  []string
		metadata map[string]string
	}{
		{"dubbo", []string{"env"}, map[string]string{"method": "m"}},
		{"thrift-framed", nil, map[string]string{"method": "ping"}},
		{"thrift-header", []string{"env"}, map[string]string{"method": "ping"}},
		{"brpc", []string{"env"}, map[string]string{"method": "m", "service": "S"}},
		{"trpc", []string{"env"}, map[string]string{trpc.KeyFunc: "/p.S/M"}},
	} {
		t.Run(tc.preamble, func(t *testing.T) {
			var frame []byte
			for _, p := range codectest.Preambles() {
				if p.Name == tc.preamble {
					frame = p.Frame
				}
			}
			codectest.Run(t, codectest.Suite{
				Registration: sniff.Registration(builtins()...),
				Samples: []codectest.Sample{{Name: tc.preamble, Frame: frame, Type: codec.Request, ID: 1,
					Metadata: tc.metadata}},
				Multiplexing: true,
				MutableKeys:  tc.mutable,
				Foreign:      codectest.Preambles("dubbo", "thrift", "brpc", "trpc"),
			})
		})
	}
}
