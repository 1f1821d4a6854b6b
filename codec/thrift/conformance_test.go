package thrift

import (
	"maps"
	"testing"

	athrift "github.com/apache/thrift/lib/go/thrift"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/codec/codectest"
)

// conformanceSuite describes the codec to the conformance kit with messages the Apache library writes in
// every transport and protocol, and a hand-built Kitex TTHeader frame.
func conformanceSuite(t testing.TB) codectest.Suite {
	kv := map[string]string{"env": "canary", "tenant": "blue"}
	var samples []codectest.Sample
	for _, w := range wires {
		header := w.transport == "header"
		meta := func(typ athrift.TMessageType) map[string]string {
			m := map[string]string{"method": "echo", "thrift.method_full": "echo"}
			if w.mux != "" && (typ == athrift.CALL || typ == athrift.ONEWAY) {
				m["service"], m["thrift.method_full"] = w.mux, w.mux+":echo"
			}
			if header {
				maps.Copy(m, kv)
			}
			return m
		}
		// The seqid takes five bytes as a compact varint, like every id the kit sets: the kit requires SetID to
		// work in place, which a compact seqid can do only up to its own varint length (see TestSetIDCompactVarint
		// for a seqid that grows).
		const seq = 1<<30 + 7
		for _, mc := range msgCases {
			if mc.name == "reply-declared-exception-20" {
				continue
			}
			samples = append(samples, codectest.Sample{
				Name:      w.String() + "/" + mc.name,
				Frame:     libMessage(t, w, "echo", mc.typ, seq, mc.body, kv),
				Type:      mc.want,
				ID:        seq,
				Status:    mc.status,
				Failed:    mc.failed,
				Metadata:  meta(mc.typ),
				Immutable: !header,
			})
		}
	}
	samples = append(samples, codectest.Sample{
		Name: "kitex-ttheader/call",
		Frame: ttHeaderFrame(42, 0, [][2]string{{"env", "canary"}}, map[uint16]string{3: "caller"}, "",
			payloadOf(t, "binary", "echo", athrift.CALL, 42, &richArgs{text: "kitex"})),
		Type:     codec.Request,
		ID:       42,
		Metadata: map[string]string{"method": "echo", "env": "canary", "kitex.from_service": "caller"},
	})
	return codectest.Suite{
		Registration:    Registration(),
		Samples:         samples,
		Multiplexing:    true,
		MutableKeys:     []string{"env", "tenant", "x-meltemi"},
		ZeroAllocDecode: true,
		Foreign:         codectest.Preambles("thrift"),
	}
}

func TestConformance(t *testing.T) { codectest.Run(t, conformanceSuite(t)) }

func FuzzConformance(f *testing.F) { codectest.Fuzz(f, conformanceSuite(f)) }
