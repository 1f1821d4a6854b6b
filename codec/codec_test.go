package codec_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/meltemi-mesh/meltemi/codec"
)

// lazyAttachments is a Loader that adds two keys, counting how often it runs.
type lazyAttachments struct{ runs int }

func (l *lazyAttachments) LoadMetadata(msg *codec.Message) error {
	l.runs++
	msg.Metadata.Add("tenant", "blue")
	msg.Metadata.Add("trace", "abc")
	if _, ok := msg.Metadata.Get("method"); !ok { // a loader may look up what is already there
		return errors.New("eager key missing")
	}
	return nil
}

func TestMetadataDefersUntilAMiss(t *testing.T) {
	var msg codec.Message
	l := &lazyAttachments{}
	msg.Metadata.Add("method", "sayHello")
	msg.Metadata.Defer(l, &msg)
	if v, ok := msg.Metadata.Get("method"); !ok || v != "sayHello" || l.runs != 0 {
		t.Fatalf("eager lookup = %q, %v; loader ran %d times", v, ok, l.runs)
	}
	if v, ok := msg.Metadata.Get("tenant"); !ok || v != "blue" || l.runs != 1 {
		t.Fatalf("deferred lookup = %q, %v; loader ran %d times", v, ok, l.runs)
	}
	if _, ok := msg.Metadata.Get("absent"); ok || l.runs != 1 {
		t.Fatalf("a miss after loading ran the loader again (%d runs)", l.runs)
	}
	if err := msg.Metadata.Err(); err != nil {
		t.Fatal(err)
	}
	var keys []string
	msg.Metadata.All(func(k, _ string) bool { keys = append(keys, k); return true })
	if strings.Join(keys, ",") != "method,tenant,trace" {
		t.Fatalf("keys = %v", keys)
	}
	msg.Metadata.Set("tenant", "green")
	if v, _ := msg.Metadata.Get("tenant"); v != "green" || msg.Metadata.Len() != 3 {
		t.Fatalf("Set replaced to %q, len %d", v, msg.Metadata.Len())
	}
	var copied codec.Metadata
	msg.Metadata.CopyDecoded(&copied)
	msg.Reset()
	if msg.Metadata.Len() != 0 {
		t.Fatal("Reset kept metadata")
	}
	if v, _ := copied.Get("trace"); v != "abc" {
		t.Fatalf("copy lost trace: %q", v)
	}
}

func TestMetadataCopyLeavesDeferredBehind(t *testing.T) {
	var msg codec.Message
	l := &lazyAttachments{}
	msg.Metadata.Add("method", "m")
	msg.Metadata.Defer(l, &msg)
	var copied codec.Metadata
	msg.Metadata.CopyDecoded(&copied)
	if _, ok := copied.Get("tenant"); ok || l.runs != 0 {
		t.Fatal("the copy ran the original's loader")
	}
}

func TestInternerReusesStrings(t *testing.T) {
	var in codec.Interner
	b := []byte("org.apache.dubbo.DemoService")
	first := in.String(b)
	b[0] = 'X' // the interned string must not alias the input
	if first != "org.apache.dubbo.DemoService" {
		t.Fatalf("interned string changed with its input: %q", first)
	}
	b[0] = 'o'
	if allocs := testing.AllocsPerRun(100, func() { _ = in.String(b) }); allocs != 0 {
		t.Fatalf("a known string cost %v allocations", allocs)
	}
}

type nopFactory struct{}

func (nopFactory) NewCodec(codec.Side) codec.Codec  { return nil }
func (nopFactory) Properties() codec.Properties     { return codec.Properties{} }
func newNop(json.RawMessage) (codec.Factory, error) { return nopFactory{}, nil }

func TestRegistry(t *testing.T) {
	r, err := codec.NewRegistry(codec.Registration{Name: "aeraki.meta_protocol.codec.x", Protocol: "X", New: newNop})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.ByProtocol("x"); !ok {
		t.Error("protocol lookup is not case-insensitive")
	}
	if _, ok := r.Lookup("aeraki.meta_protocol.codec.x"); !ok {
		t.Error("name lookup failed")
	}
	for _, bad := range []codec.Registration{
		{Name: "aeraki.meta_protocol.codec.x", Protocol: "y", New: newNop},
		{Name: "other", Protocol: "x", New: newNop},
		{Name: "incomplete"},
	} {
		if err := r.Register(bad); err == nil {
			t.Errorf("Register(%+v) succeeded", bad)
		}
	}
}

func TestDecodeConfigRejectsUnknownFields(t *testing.T) {
	var cfg struct {
		MaxBodySize int `json:"maxBodySize"`
	}
	if err := codec.DecodeConfig(json.RawMessage(`{"maxBodySize": 5}`), &cfg); err != nil || cfg.MaxBodySize != 5 {
		t.Fatalf("decode = %v, %+v", err, cfg)
	}
	if err := codec.DecodeConfig(json.RawMessage(`{"maxBodySise": 5}`), &cfg); err == nil ||
		!strings.Contains(err.Error(), "maxBodySise") {
		t.Fatalf("unknown field error = %v", err)
	}
	if err := codec.DecodeConfig(nil, &cfg); err != nil {
		t.Fatal(err)
	}
}
