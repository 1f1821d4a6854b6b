package codectest_test

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/codec/codectest"
)

// toySuite describes the toy codec built with flaws, from frames written by the layout, not by the codec.
func toySuite(flaws flaw) codectest.Suite {
	frame := func(typ codec.MessageType, status byte, id uint32, meta [][2]string, payload string) []byte {
		return appendToyFrame(nil, typ, status, id, meta, payload)
	}
	return codectest.Suite{
		Registration: toyRegistration(flaws),
		Samples: []codectest.Sample{{
			Name:     "request",
			Frame:    frame(codec.Request, 0, 7, [][2]string{{"interface", "svc.Echo"}, {"method", "echo"}, {"env", "canary"}}, "hello"),
			Type:     codec.Request,
			ID:       7,
			Metadata: map[string]string{"interface": "svc.Echo", "method": "echo", "env": "canary"},
		}, {
			Name:  "request-without-metadata",
			Frame: frame(codec.Request, 0, 1<<31-1, nil, "x"),
			Type:  codec.Request,
			ID:    1<<31 - 1,
		}, {
			Name:     "oneway",
			Frame:    frame(codec.Oneway, 0, 9, [][2]string{{"method", "fire"}}, ""),
			Type:     codec.Oneway,
			ID:       9,
			Metadata: map[string]string{"method": "fire"},
		}, {
			Name:  "heartbeat",
			Frame: frame(codec.Heartbeat, 0, 10, nil, ""),
			Type:  codec.Heartbeat,
			ID:    10,
		}, {
			Name:  "response",
			Frame: frame(codec.Response, 0, 7, nil, "pong"),
			Type:  codec.Response,
			ID:    7,
		}, {
			Name:   "error",
			Frame:  frame(codec.Error, 3, 7, [][2]string{{"error", "boom"}}, "boom"),
			Type:   codec.Error,
			ID:     7,
			Status: 3,
			Failed: true,
		}, {
			Name:  "heartbeat-response",
			Frame: frame(codec.HeartbeatResponse, 0, 10, nil, ""),
			Type:  codec.HeartbeatResponse,
			ID:    10,
		}},
		Multiplexing:    true,
		MutableKeys:     []string{"env", "trace", "tenant"},
		ZeroAllocDecode: true,
		Foreign:         codectest.Preambles(),
	}
}

func TestToy(t *testing.T) { codectest.Run(t, toySuite(0)) }

func FuzzToy(f *testing.F) { codectest.Fuzz(f, toySuite(0)) }

// TestToyRecorded runs the correct toy through the recorder: nothing fails, and nothing is skipped, so every
// property really ran.
func TestToyRecorded(t *testing.T) {
	rec := record(toySuite(0))
	for _, e := range rec.entries() {
		if e.kind != "log" {
			t.Errorf("%s %s: %s", e.kind, e.test, e.msg)
		}
	}
}

func TestKitCatches(t *testing.T) {
	tests := []struct {
		name     string
		flaws    flaw
		edit     func(s *codectest.Suite)
		property string // the subtest that must fail
		want     string // a part of the failure
	}{
		{name: "wrong length with ErrIncomplete", flaws: flawIncompleteLen,
			property: "partial", want: "want 0 (length not known yet) or"},
		{name: "SetID touching other bytes", flaws: flawSetIDClobbers,
			property: "set-id", want: "SetID must change the id and nothing else"},
		{name: "SetID copying when the id fits", flaws: flawSetIDCopies,
			property: "set-id", want: "it must rewrite in place then"},
		{name: "SetID moving and writing the old frame", flaws: flawSetIDMovesDirty,
			property: "set-id", want: "it must leave the old bytes alone"},
		{name: "ErrorReply reading Frame", flaws: flawReplyReadsFrame,
			property: "error-reply", want: "with Frame nil (it must not read req.Frame) panicked"},
		{name: "mutation losing keys", flaws: flawMutationDropsKeys,
			property: "mutation", want: "interface missing (want \"svc.Echo\")"},
		{name: "allocating decode", flaws: flawDecodeAllocates,
			property: "decode-allocs", want: "the suite requires 0"},
		{name: "Sniff refusing too few bytes", flaws: flawSniffShort,
			property: "sniff", want: "Sniff of the first 0 bytes () = NotMine"},
		{name: "heartbeat reply with another id", flaws: flawHeartbeatID,
			property: "heartbeat", want: "the reply carries id 11; want the heartbeat's, 10"},
		{name: "frame past the end of the buffer", flaws: flawPastEnd,
			property: "partial", want: "nil error, but the frame is not all there"},
		{name: "frame past the end on hostile bytes", flaws: flawPastEnd,
			property: "garbage", want: "a decoded frame is between 1 and len(buf) bytes"},
		{name: "oneway request answered", flaws: flawOnewayReply,
			property: "error-reply", want: "a request that expects no reply gets nothing and status 0"},
		{name: "Encode leaving msg.Frame behind", flaws: flawEncodeStaleFrame,
			property: "mutation", want: "did not point msg.Frame at the frame it appended"},
		{name: "panic on a lying length", flaws: flawTrustsHeaderLen,
			property: "garbage", want: "Decode panicked: runtime error: slice bounds out of range"},
		{name: "Multiplexing misdeclared", edit: func(s *codectest.Suite) { s.Multiplexing = false },
			property: "registration", want: "Properties().Multiplexing = true, but the suite says false"},
		{name: "sample metadata wrong", edit: func(s *codectest.Suite) { s.Samples[0].Metadata["method"] = "other" },
			property: "round-trip", want: `metadata "method" = "echo", want "other"`},
		{name: "sample type wrong", edit: func(s *codectest.Suite) { s.Samples[2].Type = codec.Request },
			property: "back-to-back", want: "frame 3 of 4 (oneway): decodes to oneway id 9"},
		{name: "mutations declared impossible", edit: func(s *codectest.Suite) { s.MutableKeys = nil },
			property: "mutation", want: "Encode accepted a mutation, but the suite says the protocol carries no mutable metadata"},
		{name: "foreign bytes claimed", edit: func(s *codectest.Suite) {
			s.Foreign = append(s.Foreign, codectest.Sample{Name: "lookalike", Frame: []byte("TYPO")})
		}, property: "sniff", want: "Sniff of the first 2 bytes of lookalike (54 59) = Mine"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := toySuite(tt.flaws)
			if tt.edit != nil {
				tt.edit(&s)
			}
			rec := record(s)
			prefix := "toy/" + tt.property
			for _, e := range rec.entries() {
				if (e.kind == "error" || e.kind == "fatal") && strings.HasPrefix(e.test, prefix) && strings.Contains(e.msg, tt.want) {
					return
				}
			}
			t.Errorf("no failure in %s containing %q; the kit reported:\n%s", prefix, tt.want, rec)
		})
	}
}

func TestSuiteValidation(t *testing.T) {
	tests := []struct {
		name string
		edit func(s *codectest.Suite)
		want string
	}{
		{"no codec", func(s *codectest.Suite) { s.Registration = codec.Registration{} }, "set Registration or Factory"},
		{"bad config", func(s *codectest.Suite) { s.Config = []byte(`{"maxBody": -1}`) }, "maxBody must be positive"},
		{"no samples", func(s *codectest.Suite) { s.Samples = nil }, "the suite has no samples"},
		{"duplicate names", func(s *codectest.Suite) { s.Samples[1].Name = s.Samples[0].Name }, `two samples are named "request"`},
		{"empty frame", func(s *codectest.Suite) { s.Samples[0].Frame = nil }, `sample "request" has no frame`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := toySuite(0)
			tt.edit(&s)
			rec := record(s)
			es := rec.entries()
			if len(es) != 1 || es[0].kind != "fatal" || es[0].test != "toy" || !strings.Contains(es[0].msg, tt.want) {
				t.Errorf("want one fatal failure containing %q; got:\n%s", tt.want, rec)
			}
		})
	}
}

func TestPreambles(t *testing.T) {
	names := func(ss []codectest.Sample) string {
		var out []string
		for _, s := range ss {
			out = append(out, s.Name)
		}
		return strings.Join(out, " ")
	}
	all := names(codectest.Preambles())
	for _, want := range []string{"http1", "tls", "dubbo", "thrift-framed", "brpc", "trpc"} {
		if !strings.Contains(all, want) {
			t.Errorf("Preambles() = %s, missing %s", all, want)
		}
	}
	if got := names(codectest.Preambles("thrift", "dubbo")); strings.Contains(got, "thrift") || strings.Contains(got, "dubbo") {
		t.Errorf(`Preambles("thrift", "dubbo") = %s`, got)
	}
	if got := names(codectest.Preambles("thrift-header")); strings.Contains(got, "thrift-header") || !strings.Contains(got, "thrift-binary") {
		t.Errorf(`Preambles("thrift-header") = %s`, got)
	}
}

// entry is one thing the kit reported.
type entry struct {
	test string // the subtest path
	kind string // error, fatal, skip or log
	msg  string
}

// recorder is a fake *testing.T: it records what the kit reports instead of failing the test, so the tests
// can assert that a flawed codec fails where it should. Subtests run on their own goroutine, as with
// testing, so that Fatalf and Skipf can end them with runtime.Goexit.
type recorder struct {
	name   string
	parent *recorder
	log    *recordLog
}

type recordLog struct {
	mu     sync.Mutex
	list   []entry
	failed map[*recorder]bool
}

// record runs the kit on s and returns what it reported.
func record(s codectest.Suite) *recorder {
	r := &recorder{name: "toy", log: &recordLog{failed: map[*recorder]bool{}}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		codectest.Run(r, s)
	}()
	<-done
	return r
}

func (r *recorder) add(kind, format string, args ...any) {
	r.log.mu.Lock()
	defer r.log.mu.Unlock()
	r.log.list = append(r.log.list, entry{test: r.name, kind: kind, msg: fmt.Sprintf(format, args...)})
	if kind == "error" || kind == "fatal" {
		for p := r; p != nil; p = p.parent {
			r.log.failed[p] = true
		}
	}
}

func (r *recorder) entries() []entry {
	r.log.mu.Lock()
	defer r.log.mu.Unlock()
	return append([]entry(nil), r.log.list...)
}

func (r *recorder) String() string {
	var b strings.Builder
	for _, e := range r.entries() {
		msg, _, _ := strings.Cut(e.msg, "\ngoroutine ") // stacks of recovered panics add nothing here
		fmt.Fprintf(&b, "  %s %s: %s\n", e.kind, e.test, msg)
	}
	return b.String()
}

func (r *recorder) Helper()                           {}
func (r *recorder) Errorf(format string, args ...any) { r.add("error", format, args...) }
func (r *recorder) Logf(format string, args ...any)   { r.add("log", format, args...) }

func (r *recorder) Fatalf(format string, args ...any) {
	r.add("fatal", format, args...)
	runtime.Goexit()
}

func (r *recorder) Skipf(format string, args ...any) {
	r.add("skip", format, args...)
	runtime.Goexit()
}

func (r *recorder) Run(name string, f func(*recorder)) bool {
	child := &recorder{name: r.name + "/" + name, parent: r, log: r.log}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(child)
	}()
	<-done
	r.log.mu.Lock()
	defer r.log.mu.Unlock()
	return !r.log.failed[child]
}

var _ codectest.TB[*recorder] = (*recorder)(nil)
