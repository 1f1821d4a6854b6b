// Package codectest checks that a codec keeps the contract of package codec.
//
// A codec author describes the codec in a Suite (its registration, real frames of the protocol and what each
// must decode to) and calls Run from a test and Fuzz from a fuzz target. The kit then checks, sample by sample,
// what the proxy relies on and cannot check at run time: frame lengths on partial reads, ids rewritten in place,
// mutations that keep the rest of the metadata, error replies built without the request's frame, replies a
// client of the protocol reads back, no panics on hostile bytes, and the concurrency the contract allows.
//
// The samples should come from the protocol's own reference library, written by the author's test, so that the
// codec is checked against a real peer's bytes rather than against itself.
package codectest

import (
	"encoding/json"
	"testing"

	"github.com/meltemi-mesh/meltemi/codec"
)

// Suite describes a codec under test.
type Suite struct {
	// Registration is the codec under test; the kit builds its factory from Config and checks the registration
	// itself (names, defaults, unknown config fields). It is ignored when Factory is set.
	Registration codec.Registration
	// Config is the JSON config passed to Registration.New; empty means the codec's defaults.
	Config json.RawMessage
	// Factory is the factory under test, for a codec tested without its registration.
	Factory codec.Factory

	// Samples are real frames of the protocol: requests, oneway requests, heartbeats and replies. Names must
	// be unique; they name the sample in failures.
	Samples []Sample

	// Multiplexing is what the factory's Properties must report. With it, SetID is checked on every sample and
	// replies must carry their request's id.
	Multiplexing bool
	// MutableKeys are metadata keys that a Mutation can set and remove on a request. Empty means the protocol
	// carries no metadata a mutation can change, so Encode must refuse a non-empty mutation.
	MutableKeys []string
	// ZeroAllocDecode makes an allocating steady-state Decode of a request a failure; otherwise the count is
	// only reported.
	ZeroAllocDecode bool
	// HeartbeatReplyType is the type a heartbeat reply decodes to; zero means codec.HeartbeatResponse (a reply
	// is never a Request, so zero cannot be meant literally).
	HeartbeatReplyType codec.MessageType

	// SniffMine are first bytes, other than the client samples, that the factory's Sniffer must call Mine once
	// it has 16 of them (or all of them, when there are fewer).
	SniffMine []Sample
	// Foreign are other protocols' first bytes, which the factory's Sniffer must call NotMine. Preambles
	// returns a ready list.
	Foreign []Sample
}

// Sample is one frame and what it must decode to.
type Sample struct {
	// Name names the sample in failures and subtests.
	Name string
	// Frame is the whole frame as the protocol's peer writes it. The kit never modifies it.
	Frame []byte
	// Type is the message type the frame decodes to.
	Type codec.MessageType
	// ID is the request id the frame carries.
	ID uint64
	// Status is the status the frame decodes to (a reply's; usually 0 for requests).
	Status int32
	// Failed is whether the frame decodes as a failed reply.
	Failed bool
	// Metadata is what the frame's metadata must hold: at least these keys, with these values.
	Metadata map[string]string
	// Immutable says that Encode may refuse a non-empty mutation of this request (an event, a serialization
	// the codec cannot edit). When it accepts one, the result is still checked.
	Immutable bool
}

// TB is the part of *testing.T the kit uses. Run takes it rather than *testing.T so that the kit's own tests
// can record the failures it reports; T is the implementing type itself, as in *testing.T's Run.
type TB[T any] interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Skipf(format string, args ...any)
	Run(name string, f func(T)) bool
}

// Run checks the codec s describes, one subtest per property.
func Run[T TB[T]](t T, s Suite) {
	t.Helper()
	runSuite(adapt(t), s)
}

// Fuzz makes f check the codec s describes against arbitrary bytes, seeded with its samples: Decode never
// panics, frame lengths stay within the input, and what decodes can be re-encoded, answered and decoded again
// consistently.
func Fuzz(f *testing.F, s Suite) {
	f.Helper()
	k, err := newKit(s)
	if err != nil {
		f.Fatalf("codectest: %v", err)
	}
	for _, smp := range s.Samples {
		f.Add(smp.Frame)
	}
	// Frames back to back, cut in the middle of the last, as a stream reads them. Large samples stay out of
	// it: the fuzzer mutates big inputs slowly, and the samples themselves are seeds already.
	var stream []byte
	for _, smp := range s.Samples {
		if len(smp.Frame) <= maxStreamSeed/4 && len(stream)+len(smp.Frame) <= maxStreamSeed {
			stream = append(stream, smp.Frame...)
		}
	}
	first := s.Samples[0].Frame
	f.Add(append(stream, first[:len(first)/2]...))
	f.Fuzz(func(t *testing.T, data []byte) {
		k.checkInput(adapt(t), "fuzz input", data)
	})
}

// maxStreamSeed bounds the seed Fuzz makes of the samples back to back.
const maxStreamSeed = 16 << 10

// tester is TB without its type parameter, so the checks need not be generic.
type tester interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Skipf(format string, args ...any)
	run(name string, f func(tester)) bool
}

// adapter turns a TB[T] into a tester.
type adapter[T TB[T]] struct{ t T }

func adapt[T TB[T]](t T) tester { return adapter[T]{t} }

func (a adapter[T]) Helper()                           { a.t.Helper() }
func (a adapter[T]) Errorf(format string, args ...any) { a.t.Helper(); a.t.Errorf(format, args...) }
func (a adapter[T]) Fatalf(format string, args ...any) { a.t.Helper(); a.t.Fatalf(format, args...) }
func (a adapter[T]) Logf(format string, args ...any)   { a.t.Helper(); a.t.Logf(format, args...) }
func (a adapter[T]) Skipf(format string, args ...any)  { a.t.Helper(); a.t.Skipf(format, args...) }
func (a adapter[T]) run(name string, f func(tester)) bool {
	return a.t.Run(name, func(t T) { f(adapter[T]{t}) })
}
