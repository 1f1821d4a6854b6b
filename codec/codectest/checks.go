package codectest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/meltemi-mesh/meltemi/codec"
)

// kit is a Suite made ready to check: its factory built and its samples validated.
type kit struct {
	s       Suite
	factory codec.Factory
	hbType  codec.MessageType
}

func newKit(s Suite) (*kit, error) {
	k := &kit{s: s, factory: s.Factory, hbType: s.HeartbeatReplyType}
	if k.hbType == codec.Request {
		k.hbType = codec.HeartbeatResponse
	}
	if k.factory == nil {
		if s.Registration.New == nil {
			return nil, errors.New("the suite names no codec: set Registration or Factory")
		}
		f, err := s.Registration.New(s.Config)
		if err != nil {
			return nil, fmt.Errorf("codec %q: New with config %q: %w", s.Registration.Name, s.Config, err)
		}
		if f == nil {
			return nil, fmt.Errorf("codec %q: New returned no factory and no error", s.Registration.Name)
		}
		k.factory = f
	}
	if len(s.Samples) == 0 {
		return nil, errors.New("the suite has no samples")
	}
	seen := map[string]bool{}
	for _, list := range [][]Sample{s.Samples, s.SniffMine, s.Foreign} {
		for i, smp := range list {
			switch {
			case smp.Name == "":
				return nil, fmt.Errorf("sample %d of a list has no name", i)
			case seen[smp.Name]:
				return nil, fmt.Errorf("two samples are named %q", smp.Name)
			case len(smp.Frame) == 0:
				return nil, fmt.Errorf("sample %q has no frame", smp.Name)
			}
			seen[smp.Name] = true
		}
	}
	return k, nil
}

// codecFor returns a new codec of the side that reads frames of type typ: replies arrive on upstream
// connections, everything else on downstream ones.
func (k *kit) codecFor(typ codec.MessageType) codec.Codec { return k.factory.NewCodec(sideOf(typ)) }

// sideOf is the side of the proxy that reads frames of type typ.
func sideOf(typ codec.MessageType) codec.Side {
	if typ.IsReply() {
		return codec.Upstream
	}
	return codec.Downstream
}

// downstream and upstream return new codecs of a side.
func (k *kit) downstream() codec.Codec { return k.factory.NewCodec(codec.Downstream) }
func (k *kit) upstream() codec.Codec   { return k.factory.NewCodec(codec.Upstream) }

// property is one subtest of Run.
type property struct {
	name  string
	check func(t tester)
}

func runSuite(t tester, s Suite) {
	t.Helper()
	k, err := newKit(s)
	if err != nil {
		t.Fatalf("codectest: %v", err)
	}
	for _, p := range []property{
		{"registration", k.checkRegistration},
		{"round-trip", k.checkRoundTrip},
		{"back-to-back", k.checkBackToBack},
		{"partial", k.checkPartial},
		{"set-id", k.checkSetID},
		{"decode-allocs", k.checkDecodeAllocs},
		{"mutation", k.checkMutation},
		{"error-reply", k.checkErrorReply},
		{"heartbeat", k.checkHeartbeat},
		{"garbage", k.checkGarbage},
		{"concurrency", k.checkConcurrency},
		{"sniff", k.checkSniff},
	} {
		t.run(p.name, func(t tester) {
			defer recoverTo(t, p.name)
			p.check(t)
		})
	}
}

// eachSample runs f in a subtest per sample that keep accepts (every sample when keep is nil), and skips with
// none when there is no such sample.
func (k *kit) eachSample(t tester, keep func(Sample) bool, none string, f func(t tester, smp Sample)) {
	t.Helper()
	ran := false
	for _, smp := range k.s.Samples {
		if keep != nil && !keep(smp) {
			continue
		}
		ran = true
		t.run(smp.Name, func(t tester) {
			defer recoverTo(t, smp.Name)
			f(t, smp)
		})
	}
	if !ran {
		t.Skipf("%s", none)
	}
}

func isHeartbeat(smp Sample) bool { return smp.Type == codec.Heartbeat }

// carriesMetadata is a request a mutation can edit: two-way or oneway.
func carriesMetadata(smp Sample) bool { return smp.Type == codec.Request || smp.Type == codec.Oneway }

// guardFatal runs f and ends the test on a panic, for calls the rest of a check depends on.
func guardFatal(t tester, what string, f func()) {
	t.Helper()
	if !guard(t, what, f) {
		t.Fatalf("%s: cannot go on after the panic", what)
	}
}

// mustDecode decodes buf, which holds exactly one frame, with c, ending the test if it does not.
func mustDecode(t tester, what string, c codec.Codec, buf []byte) *codec.Message {
	t.Helper()
	msg := &codec.Message{}
	var n int
	var err error
	guardFatal(t, what+": Decode", func() { n, err = c.Decode(buf, msg) })
	if err != nil {
		t.Fatalf("%s: Decode of the whole %d-byte frame: %v", what, len(buf), err)
	}
	if n != len(buf) {
		t.Fatalf("%s: Decode of a %d-byte frame returned n = %d", what, len(buf), n)
	}
	return msg
}

// expect checks that msg is what smp says it decodes to.
func expect(t tester, what string, msg *codec.Message, smp Sample) {
	t.Helper()
	if msg.Type != smp.Type || msg.ID != smp.ID || msg.Status != smp.Status || msg.Failed != smp.Failed {
		t.Errorf("%s: decodes to %v id %d status %d failed %v; the sample says %v id %d status %d failed %v",
			what, msg.Type, msg.ID, msg.Status, msg.Failed, smp.Type, smp.ID, smp.Status, smp.Failed)
	}
	// Get first: it is how routes read metadata, and it must load what the codec deferred.
	for _, key := range slices.Sorted(maps.Keys(smp.Metadata)) {
		want := smp.Metadata[key]
		if got, ok := msg.Metadata.Get(key); !ok {
			t.Errorf("%s: metadata %q missing (want %q); err %v", what, key, clip(want), msg.Metadata.Err())
		} else if got != want {
			t.Errorf("%s: metadata %q = %q, want %q", what, key, clip(got), clip(want))
		}
	}
	v := observe(msg)
	if v.metaErr != nil {
		t.Errorf("%s: metadata: %v", what, v.metaErr)
	}
	if len(v.dups) > 0 {
		t.Errorf("%s: metadata holds %q more than once; it is a set", what, v.dups)
	}
}

func (k *kit) checkRegistration(t tester) {
	if reg := k.s.Registration; k.s.Factory == nil {
		if reg.Name == "" || reg.Protocol == "" {
			t.Errorf("registration: Name %q and Protocol %q must both be set", reg.Name, reg.Protocol)
		}
		var f codec.Factory
		var err error
		if guard(t, "New with an empty config", func() { f, err = reg.New(nil) }) && (err != nil || f == nil) {
			t.Errorf("New with an empty config = %v, %v; an empty config means the defaults", f, err)
		}
		const field = "codectestUnknownField"
		guardFatal(t, "New with an unknown field", func() { _, err = reg.New(json.RawMessage(`{"` + field + `": 1}`)) })
		switch {
		case err == nil:
			t.Errorf("New accepted the unknown config field %q; unknown fields must be rejected", field)
		case !strings.Contains(err.Error(), field):
			t.Errorf("New rejected the unknown config field %q with %q, which does not name it", field, err)
		}
	}
	if got := k.factory.Properties().Multiplexing; got != k.s.Multiplexing {
		t.Errorf("Properties().Multiplexing = %v, but the suite says %v (Suite.Multiplexing)", got, k.s.Multiplexing)
	}
}

func (k *kit) checkRoundTrip(t tester) {
	k.eachSample(t, nil, "", func(t tester, smp Sample) {
		k.checkFollowed(t, smp)
		buf := clone(smp.Frame)
		msg := &codec.Message{}
		var n int
		var err error
		guardFatal(t, "round trip: Decode", func() { n, err = k.codecFor(smp.Type).Decode(buf, msg) })
		if err != nil {
			t.Fatalf("round trip: Decode of the whole %d-byte frame: %v", len(buf), err)
		}
		if n != len(buf) {
			t.Fatalf("round trip: Decode of a %d-byte frame returned n = %d", len(buf), n)
		}
		if !sameSlice(msg.Frame, buf) {
			t.Errorf("round trip: msg.Frame (%d bytes) is not buf[:n], the bytes decoded", len(msg.Frame))
		}
		if !bytes.Equal(buf, smp.Frame) {
			t.Errorf("round trip: Decode changed the bytes it decoded, at offsets %s", diffOffsets(buf, smp.Frame))
		}
		expect(t, "round trip", msg, smp)
	})
}

// checkFollowed decodes smp with half of the next sample after it, as a read that ends mid-frame leaves it.
func (k *kit) checkFollowed(t tester, smp Sample) {
	t.Helper()
	var next Sample
	for i, s := range k.s.Samples {
		if s.Name == smp.Name {
			next = k.s.Samples[(i+1)%len(k.s.Samples)]
		}
	}
	buf := append(clone(smp.Frame), next.Frame[:len(next.Frame)/2]...)
	what := fmt.Sprintf("round trip followed by half of %s", next.Name)
	msg := &codec.Message{}
	var n int
	var err error
	guardFatal(t, what+": Decode", func() { n, err = k.codecFor(smp.Type).Decode(buf, msg) })
	if err != nil || n != len(smp.Frame) {
		t.Errorf("%s: Decode = %d, %v; want %d, the first frame", what, n, err, len(smp.Frame))
		return
	}
	expect(t, what, msg, smp)
}

func (k *kit) checkBackToBack(t tester) {
	var requests, replies []Sample
	for _, smp := range k.s.Samples {
		if smp.Type.IsReply() {
			replies = append(replies, smp)
		} else {
			requests = append(requests, smp)
		}
	}
	k.stream(t, "frames back to back", k.downstream(), requests)
	k.stream(t, "replies back to back", k.upstream(), replies)
}

// stream decodes smps back to back from one buffer with one codec, as a connection reads them, followed by
// half of the first frame again.
func (k *kit) stream(t tester, what string, c codec.Codec, smps []Sample) {
	t.Helper()
	if len(smps) == 0 {
		return
	}
	var buf []byte
	for _, smp := range smps {
		buf = append(buf, smp.Frame...)
	}
	first := smps[0].Frame
	buf = append(buf, first[:len(first)/2]...)
	msg := &codec.Message{}
	for i, smp := range smps {
		w := fmt.Sprintf("%s: frame %d of %d (%s)", what, i+1, len(smps), smp.Name)
		msg.Reset()
		var n int
		var err error
		guardFatal(t, w+": Decode", func() { n, err = c.Decode(buf, msg) })
		if err != nil {
			t.Fatalf("%s: Decode: %v", w, err)
		}
		if n != len(smp.Frame) {
			t.Fatalf("%s: Decode returned n = %d; the frame is %d bytes", w, n, len(smp.Frame))
		}
		if !sameSlice(msg.Frame, buf[:n]) {
			t.Errorf("%s: msg.Frame is not buf[:n]", w)
		}
		expect(t, w, msg, smp)
		buf = buf[n:]
	}
	msg.Reset()
	var n int
	var err error
	guardFatal(t, what+": Decode of the partial frame at the end", func() { n, err = c.Decode(buf, msg) })
	if err != codec.ErrIncomplete || n != 0 && n != len(first) {
		t.Errorf("%s: Decode of the first %d bytes of %s after the last frame = %d, %v; want ErrIncomplete with n 0 or %d",
			what, len(buf), smps[0].Name, n, err, len(first))
	}
}

// maxReported bounds the failures a check reports about one sample, so one bug does not print a thousand lines.
const maxReported = 3

func (k *kit) checkPartial(t tester) {
	k.eachSample(t, nil, "", func(t tester, smp Sample) {
		c := k.codecFor(smp.Type)
		frame := clone(smp.Frame)
		msg := &codec.Message{}
		bad := 0
		for i := range len(frame) {
			msg.Reset()
			var n int
			var err error
			if !guard(t, fmt.Sprintf("partial read: Decode of the first %d of %d bytes", i, len(frame)), func() {
				n, err = c.Decode(frame[:i:i], msg)
			}) {
				if bad++; bad >= maxReported {
					return
				}
				continue
			}
			var problem string
			switch {
			case err == nil:
				problem = fmt.Sprintf("Decode = %d, nil error, but the frame is not all there", n)
			case err != codec.ErrIncomplete && errors.Is(err, codec.ErrIncomplete):
				problem = fmt.Sprintf("Decode wraps ErrIncomplete (%v); return it as it is, the proxy compares with ==", err)
			case err != codec.ErrIncomplete:
				problem = fmt.Sprintf("Decode = %d, %v; want ErrIncomplete", n, err)
			case n != 0 && n != len(frame):
				problem = fmt.Sprintf("ErrIncomplete with n = %d; want 0 (length not known yet) or %d (the whole frame)", n, len(frame))
			}
			if problem != "" {
				if bad++; bad <= maxReported {
					t.Errorf("partial read of the first %d of %d bytes: %s", i, len(frame), problem)
				}
			}
		}
		if bad > maxReported {
			t.Errorf("partial read: %d of %d prefixes are wrong in all", bad, len(frame))
		}
		// The codec must still decode the whole frame after all those partial reads.
		msg.Reset()
		var n int
		var err error
		if guard(t, "Decode of the whole frame after partial reads", func() { n, err = c.Decode(frame, msg) }) &&
			(err != nil || n != len(frame)) {
			t.Errorf("after partial reads, Decode of the whole %d-byte frame = %d, %v", len(frame), n, err)
		}
	})
}

// testIDs are the ids SetID is checked with: the smallest, one that changes a single bit, the largest the
// proxy passes, and one with a bit set in each byte.
var testIDs = []uint64{1, 2, 1<<31 - 1, 0x5a5a5a5}

func (k *kit) checkSetID(t tester) {
	if !k.s.Multiplexing {
		t.Skipf("the protocol does not multiplex (Suite.Multiplexing is false), so the proxy never rewrites its ids")
	}
	k.eachSample(t, nil, "", func(t tester, smp Sample) {
		ref := observe(mustDecode(t, "set id: reference decode", k.codecFor(smp.Type), clone(smp.Frame)))
		c := k.codecFor(smp.Type)
		buf := clone(smp.Frame)
		msg := mustDecode(t, "set id", c, buf)
		before, moved := clone(buf), false
		// The sample's own id comes last: setting it back must restore the frame byte for byte, unless the
		// frame had to grow on the way.
		for i, id := range append(slices.Clone(testIDs), smp.ID) {
			guardFatal(t, fmt.Sprintf("SetID(%d)", id), func() { c.SetID(msg, id) })
			if msg.ID != id {
				t.Errorf("SetID(%d) left msg.ID = %d", id, msg.ID)
			}
			if !sameSlice(msg.Frame, buf) {
				// No room for the id where the old one was: the codec built a new frame, and the old one
				// (which may still be queued for writing elsewhere) must be as it was.
				if !bytes.Equal(buf, before) {
					t.Errorf("SetID(%d) moved msg.Frame but changed the old frame at offsets %s; it must leave the old bytes alone",
						id, diffOffsets(buf, before))
				}
				moved = true
				buf = msg.Frame
			}
			before = clone(buf)
			want := ref
			want.id = id
			if i == 0 {
				// The message's deferred metadata, loaded only now, is read from the rewritten frame.
				if got := observe(msg); !got.same(want, false) {
					t.Errorf("after SetID(%d) the message says %v; want %v", id, got, want)
				}
			}
			again := observe(mustDecode(t, fmt.Sprintf("set id: decoding after SetID(%d)", id), k.codecFor(smp.Type), clone(buf)))
			if !again.same(want, false) {
				t.Errorf("after SetID(%d) the frame decodes to %v; want %v: SetID must change the id and nothing else", id, again, want)
				c.SetID(msg, smp.ID) // the other ids would only repeat the failure; the check below shows the bytes
				break
			}
		}
		if !moved && !bytes.Equal(buf, smp.Frame) {
			t.Errorf("SetID back to the sample's id %d leaves the bytes at offsets %s changed; SetID must touch only the id",
				smp.ID, diffOffsets(buf, smp.Frame))
		}
		// The frame has held the widest id by now, so every rewrite fits in place.
		if allocs := testing.AllocsPerRun(100, func() { c.SetID(msg, 1<<30) }); allocs != 0 {
			t.Errorf("SetID allocates %.1f times per call once the frame has held a 31-bit id; it must rewrite in place then", allocs)
		}
	})
}

func (k *kit) checkDecodeAllocs(t tester) {
	k.eachSample(t, carriesMetadata, "the suite has no request samples", func(t tester, smp Sample) {
		c := k.downstream()
		frame := clone(smp.Frame)
		msg := &codec.Message{}
		var failure error
		decode := func() {
			msg.Reset()
			if _, err := c.Decode(frame, msg); err != nil {
				failure = err
			}
		}
		allocs := testing.AllocsPerRun(100, decode)
		if failure != nil {
			t.Fatalf("steady-state decode: %v", failure)
		}
		withMeta := testing.AllocsPerRun(100, func() {
			decode()
			msg.Metadata.All(func(string, string) bool { return true })
		})
		t.Logf("steady state: Decode allocates %.1f times per frame, %.1f with all its metadata loaded", allocs, withMeta)
		if allocs > 0 && k.s.ZeroAllocDecode {
			t.Errorf("steady state: Decode allocates %.1f times per frame on a codec that has decoded it before; the suite requires 0 (Suite.ZeroAllocDecode)",
				allocs)
		}
	})
}

// dstPrefix is what the kit puts in dst before Encode and the reply methods, which must append after it.
const dstPrefix = "codectest-dst"

func (k *kit) checkMutation(t tester) {
	k.eachSample(t, nil, "", func(t tester, smp Sample) {
		k.checkEmptyMutation(t, smp)
		if !carriesMetadata(smp) {
			return
		}
		if len(k.s.MutableKeys) == 0 {
			k.checkMutationRefused(t, smp)
			return
		}
		for _, mc := range mutationCases(k.s.MutableKeys) {
			k.checkMutationCase(t, smp, mc.name, &mc.mut)
		}
	})
}

// checkEmptyMutation checks that Encode copies a frame it has nothing to change in.
func (k *kit) checkEmptyMutation(t tester, smp Sample) {
	t.Helper()
	for _, m := range []struct {
		name string
		mut  *codec.Mutation
	}{{"a nil mutation", nil}, {"an empty mutation", &codec.Mutation{}}} {
		c := k.codecFor(smp.Type)
		msg := mustDecode(t, "Encode with "+m.name, c, clone(smp.Frame))
		var out []byte
		var err error
		if !guard(t, "Encode with "+m.name, func() { out, err = c.Encode([]byte(dstPrefix), msg, m.mut) }) {
			continue
		}
		if err != nil {
			t.Errorf("Encode with %s: %v; it must copy the frame unchanged", m.name, err)
			continue
		}
		if !bytes.HasPrefix(out, []byte(dstPrefix)) {
			t.Errorf("Encode with %s overwrote dst; it must append to it", m.name)
			continue
		}
		got := out[len(dstPrefix):]
		if !bytes.Equal(got, smp.Frame) {
			t.Errorf("Encode with %s changed the frame (offsets %s); it must copy it byte for byte", m.name, diffOffsets(got, smp.Frame))
		}
		if !sameSlice(msg.Frame, got) {
			t.Errorf("Encode with %s did not point msg.Frame at the frame it appended", m.name)
		}
	}
}

// checkMutationRefused checks that a protocol without mutable metadata says so rather than drop an edit.
func (k *kit) checkMutationRefused(t tester, smp Sample) {
	t.Helper()
	c := k.downstream()
	msg := mustDecode(t, "mutation", c, clone(smp.Frame))
	mut := &codec.Mutation{Set: []codec.KeyValue{{Key: "codectest-key", Value: "codectest-value"}}}
	var err error
	if guard(t, "Encode with a mutation", func() { _, err = c.Encode(nil, msg, mut) }) && err == nil {
		t.Errorf("Encode accepted a mutation, but the suite says the protocol carries no mutable metadata (Suite.MutableKeys is empty): " +
			"a codec that cannot carry an edit must return an error rather than drop it; if it can, list the keys in Suite.MutableKeys")
	}
}

// mutationCase is one edit the mutation check applies to every request.
type mutationCase struct {
	name string
	mut  codec.Mutation
}

func mutationCases(keys []string) []mutationCase {
	var set, mixed codec.Mutation
	for i, key := range keys {
		kv := codec.KeyValue{Key: key, Value: fmt.Sprintf("codectest-value-%d", i)}
		set.Set = append(set.Set, kv)
		if i%2 == 0 {
			mixed.Set = append(mixed.Set, kv)
		} else {
			mixed.Remove = append(mixed.Remove, key)
		}
	}
	cases := []mutationCase{
		{"set", set},
		{"remove", codec.Mutation{Remove: slices.Clone(keys)}},
		{"set-then-remove", codec.Mutation{Set: []codec.KeyValue{{Key: keys[0], Value: "codectest-gone"}}, Remove: keys[:1]}},
		{"last-set-wins", codec.Mutation{Set: []codec.KeyValue{{Key: keys[0], Value: "codectest-first"}, {Key: keys[0], Value: "codectest-last"}}}},
	}
	if len(keys) > 1 {
		cases = append(cases, mutationCase{"set-and-remove", mixed})
	}
	return cases
}

// applyMutation is what metadata becomes under mut: keys set in order, then keys removed.
func applyMutation(meta map[string]string, mut *codec.Mutation) map[string]string {
	out := maps.Clone(meta)
	for _, kv := range mut.Set {
		out[kv.Key] = kv.Value
	}
	for _, key := range mut.Remove {
		delete(out, key)
	}
	return out
}

func describeMutation(mut *codec.Mutation) string {
	var parts []string
	for _, kv := range mut.Set {
		parts = append(parts, fmt.Sprintf("set %s=%q", kv.Key, kv.Value))
	}
	for _, key := range mut.Remove {
		parts = append(parts, "remove "+key)
	}
	return strings.Join(parts, ", ")
}

func (k *kit) checkMutationCase(t tester, smp Sample, name string, mut *codec.Mutation) {
	t.Helper()
	what := fmt.Sprintf("mutation %s (%s)", name, describeMutation(mut))
	orig := observe(mustDecode(t, what+": reference decode", k.downstream(), clone(smp.Frame)))
	c := k.downstream()
	msg := mustDecode(t, what, c, clone(smp.Frame))
	var out []byte
	var err error
	if !guard(t, what+": Encode", func() { out, err = c.Encode([]byte(dstPrefix), msg, mut) }) {
		return
	}
	if err != nil {
		if smp.Immutable {
			t.Logf("%s: Encode refused to edit a sample marked Immutable: %v", what, err)
			return
		}
		t.Errorf("%s: Encode: %v", what, err)
		return
	}
	if !bytes.HasPrefix(out, []byte(dstPrefix)) {
		t.Errorf("%s: Encode overwrote dst; it must append to it", what)
		return
	}
	frame := out[len(dstPrefix):]
	if !sameSlice(msg.Frame, frame) {
		t.Errorf("%s: Encode did not point msg.Frame at the frame it appended", what)
	}
	got := observe(mustDecode(t, what+": decoding the encoded frame with a new codec", k.downstream(), clone(frame)))
	want := orig
	want.meta = applyMutation(orig.meta, mut)
	if !got.same(want, false) {
		t.Errorf("%s: the encoded frame decodes to %v; want %v: %s", what, got, want, diffMeta(got.meta, want.meta))
		return
	}
	if len(got.dups) > 0 {
		t.Errorf("%s: the encoded frame holds metadata %q more than once", what, got.dups)
	}
	if k.s.Multiplexing {
		// The proxy rewrites the id of a request it has just encoded, through the same message.
		const id = 1<<31 - 2
		guardFatal(t, what+": SetID after Encode", func() { c.SetID(msg, id) })
		after := observe(mustDecode(t, what+": decoding after SetID", k.downstream(), clone(msg.Frame)))
		want.id = id
		if !after.same(want, false) {
			t.Errorf("%s, then SetID(%d) on the same message: the frame decodes to %v; want %v: after Encode, the message's bookkeeping must describe the new frame",
				what, id, after, want)
		}
	}
}

// errorDetails are the details error replies are built with: none, non-ASCII, and one longer than a sane
// frame, which a codec must cut rather than write a reply its peer refuses.
var errorDetails = []string{"", "codectest: upstream failed (ünïcødé, 😀)", strings.Repeat("codectest detail ", 1<<14)}

func (k *kit) checkErrorReply(t tester) {
	k.eachSample(t, carriesMetadata, "the suite has no request samples", func(t tester, smp Sample) {
		c := k.downstream()
		buf := clone(smp.Frame)
		msg := mustDecode(t, "error reply", c, buf)
		req := proxyCopy(msg)
		// By the time the proxy answers, the frame's buffer holds other bytes and the codec has decoded other
		// frames: a reply may use only what the proxy kept.
		scribble(buf)
		msg.Reset()
		mustDecode(t, "error reply: decoding the frame again", c, clone(smp.Frame))
		for _, kind := range codec.ErrorKinds {
			for _, detail := range errorDetails {
				if !k.checkOneErrorReply(t, "error reply", c, req, kind, detail) {
					return // one failure per sample: the others are usually the same bug
				}
			}
		}
	})
}

// checkOneErrorReply checks ErrorReply(req, kind, detail) and reports whether it is right.
func (k *kit) checkOneErrorReply(t tester, what string, c codec.Codec, req *codec.Message, kind codec.ErrorKind, detail string) bool {
	t.Helper()
	what = fmt.Sprintf("%s: ErrorReply(%v) to %v %d", what, kind, req.Type, req.ID)
	var out []byte
	var status int32
	if !guard(t, what+" with Frame nil (it must not read req.Frame)", func() {
		out, status = c.ErrorReply([]byte(dstPrefix), req, kind, detail)
	}) {
		return false
	}
	if !bytes.HasPrefix(out, []byte(dstPrefix)) {
		t.Errorf("%s: overwrote dst; it must append to it", what)
		return false
	}
	reply := out[len(dstPrefix):]
	if want, ok := streamReplyType(req.Type); ok {
		return k.checkStreamErrorReply(t, what, req, want, reply, status)
	}
	if req.Type != codec.Request {
		if len(reply) != 0 || status != 0 {
			t.Errorf("%s: appended %d bytes with status %d; a request that expects no reply gets nothing and status 0",
				what, len(reply), status)
			return false
		}
		return true
	}
	if len(reply) == 0 {
		t.Errorf("%s: appended nothing; a two-way request must be answered", what)
		return false
	}
	r := &codec.Message{}
	var n int
	var err error
	if !guard(t, what+": decoding the reply", func() { n, err = k.upstream().Decode(reply, r) }) {
		return false
	}
	switch {
	case err != nil:
		t.Errorf("%s: the %d-byte reply (%s) does not decode: %v", what, len(reply), hexPrefix(reply), err)
	case n != len(reply):
		t.Errorf("%s: the reply is %d bytes but decodes as a %d-byte frame; it must be exactly one frame", what, len(reply), n)
	case r.Type != codec.Response && r.Type != codec.Error:
		t.Errorf("%s: the reply decodes as %v; want a response or an error", what, r.Type)
	case r.ID != req.ID:
		t.Errorf("%s: the reply carries id %d; want the request's, %d", what, r.ID, req.ID)
	case !r.Failed:
		t.Errorf("%s: the reply does not decode as failed (status %d)", what, r.Status)
	case r.Status != status:
		t.Errorf("%s: ErrorReply returned status %d, but the reply decodes with status %d", what, status, r.Status)
	default:
		return true
	}
	return false
}

func (k *kit) checkHeartbeat(t tester) {
	k.eachSample(t, isHeartbeat, "the suite has no heartbeat samples", func(t tester, smp Sample) {
		c := k.downstream()
		msg := mustDecode(t, "heartbeat", c, clone(smp.Frame))
		k.checkHeartbeatReply(t, "heartbeat", c, msg)
	})
}

// checkHeartbeatReply checks the answer to the heartbeat msg.
func (k *kit) checkHeartbeatReply(t tester, what string, c codec.Codec, msg *codec.Message) {
	t.Helper()
	what = fmt.Sprintf("%s: HeartbeatReply to id %d", what, msg.ID)
	var out []byte
	if !guard(t, what, func() { out = c.HeartbeatReply([]byte(dstPrefix), msg) }) {
		return
	}
	if !bytes.HasPrefix(out, []byte(dstPrefix)) {
		t.Errorf("%s: overwrote dst; it must append to it", what)
		return
	}
	reply := out[len(dstPrefix):]
	if len(reply) == 0 {
		t.Errorf("%s: appended nothing", what)
		return
	}
	r := &codec.Message{}
	var n int
	var err error
	if !guard(t, what+": decoding the reply", func() { n, err = k.upstream().Decode(reply, r) }) {
		return
	}
	switch {
	case err != nil:
		t.Errorf("%s: the %d-byte reply (%s) does not decode: %v", what, len(reply), hexPrefix(reply), err)
	case n != len(reply):
		t.Errorf("%s: the reply is %d bytes but decodes as a %d-byte frame; it must be exactly one frame", what, len(reply), n)
	case r.Type != k.hbType:
		t.Errorf("%s: the reply decodes as %v; want %v (Suite.HeartbeatReplyType)", what, r.Type, k.hbType)
	case r.ID != msg.ID:
		t.Errorf("%s: the reply carries id %d; want the heartbeat's, %d", what, r.ID, msg.ID)
	case r.Failed:
		t.Errorf("%s: the reply decodes as failed (status %d)", what, r.Status)
	}
}

// maxGarbageFailures bounds what the garbage check reports: past a few, the rest is the same bug.
const maxGarbageFailures = 10

func (k *kit) checkGarbage(t tester) {
	ct := &capped{tester: t, max: maxGarbageFailures}
	for _, in := range hostileInputs(k.s.Samples) {
		k.checkInput(ct, in.name, in.data)
		if ct.n > ct.max {
			break
		}
	}
	if ct.n > ct.max {
		t.Errorf("garbage: more failures not shown; fix these first")
	}
}

// capped is a tester that forwards only the first max failures.
type capped struct {
	tester
	n, max int
}

func (c *capped) Errorf(format string, args ...any) {
	c.n++
	if c.n <= c.max {
		c.tester.Errorf(format, args...)
	}
}

// concurrencyRounds is how often each goroutine of the concurrency check goes over the samples: enough for the
// race detector to see overlapping accesses, few enough to stay fast under it.
const concurrencyRounds = 40

func (k *kit) checkConcurrency(t tester) {
	ran := k.concurrency(t, codec.Downstream)
	if k.concurrency(t, codec.Upstream) || ran {
		return
	}
	t.Skipf("the codec decodes none of the samples")
}

// concurrency checks the codec of one side with the samples that side reads, and reports whether there were
// any.
func (k *kit) concurrency(t tester, side codec.Side) bool {
	c := k.factory.NewCodec(side)
	type prepared struct {
		msg *codec.Message // decoded by c, on its own copy of the frame
		req *codec.Message // what the proxy keeps of it
	}
	var own []Sample
	var preps []prepared
	for _, smp := range k.s.Samples {
		if sideOf(smp.Type) != side {
			continue
		}
		msg := mustDecode(t, "concurrency: "+smp.Name, c, clone(smp.Frame))
		own = append(own, smp)
		preps = append(preps, prepared{msg, proxyCopy(msg)})
	}
	if len(own) == 0 {
		return false
	}
	// The contract: Decode runs on the connection's goroutine while the proxy calls SetID, ErrorReply and
	// HeartbeatReply on the same codec from others. Under -race, shared scratch space shows up here.
	problems := make(chan string, 2)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer func() {
			if r := recover(); r != nil {
				problems <- fmt.Sprintf("concurrency: Decode panicked: %v", r)
			}
		}()
		bufs := make([][]byte, len(own))
		for i, smp := range own {
			bufs[i] = clone(smp.Frame)
		}
		msg := &codec.Message{}
		for range concurrencyRounds {
			for i, smp := range own {
				msg.Reset()
				if _, err := c.Decode(bufs[i], msg); err != nil {
					problems <- fmt.Sprintf("concurrency: Decode of %s: %v", smp.Name, err)
					return
				}
				msg.Metadata.All(func(string, string) bool { return true })
			}
		}
	})
	wg.Go(func() {
		defer func() {
			if r := recover(); r != nil {
				problems <- fmt.Sprintf("concurrency: a reply method or SetID panicked: %v", r)
			}
		}()
		var dst []byte
		for round := range concurrencyRounds {
			for _, p := range preps {
				switch p.req.Type {
				case codec.Request, codec.Oneway:
					dst, _ = c.ErrorReply(dst[:0], p.req, codec.ErrorKinds[round%len(codec.ErrorKinds)], "codectest")
				case codec.Heartbeat:
					dst = c.HeartbeatReply(dst[:0], p.msg)
				}
				if k.s.Multiplexing {
					c.SetID(p.msg, uint64(round+1))
				}
			}
		}
	})
	wg.Wait()
	close(problems)
	for p := range problems {
		t.Errorf("%s side: %s", side, p)
	}
	return true
}

// streamReplyType is the type of the error reply a stream frame may get: an INIT is refused with an INIT, any
// other frame of an open stream is answered with a reset.
func streamReplyType(t codec.MessageType) (codec.MessageType, bool) {
	switch t {
	case codec.StreamInit:
		return codec.StreamInit, true
	case codec.StreamData, codec.StreamFeedback, codec.StreamCloseOneWay:
		return codec.StreamCloseTwoWay, true
	}
	return 0, false
}

// checkStreamErrorReply checks the error reply to a stream frame: nothing, for a protocol without such
// replies, or one frame of the expected type on the same stream that reads as a failure.
func (k *kit) checkStreamErrorReply(t tester, what string, req *codec.Message, want codec.MessageType, reply []byte,
	status int32) bool {
	t.Helper()
	if len(reply) == 0 {
		if status != 0 {
			t.Errorf("%s: appended nothing but returned status %d; want 0", what, status)
			return false
		}
		return true
	}
	r := &codec.Message{}
	var n int
	var err error
	// A refused INIT travels to the client, a reset to either peer: a codec of the side that reads it.
	if !guard(t, what+": decoding the reply", func() { n, err = k.factory.NewCodec(codec.Downstream).Decode(reply, r) }) {
		return false
	}
	switch {
	case err != nil:
		t.Errorf("%s: the %d-byte reply (%s) does not decode: %v", what, len(reply), hexPrefix(reply), err)
	case n != len(reply):
		t.Errorf("%s: the reply is %d bytes but decodes as a %d-byte frame; it must be exactly one frame", what, len(reply), n)
	case r.Type != want:
		t.Errorf("%s: the reply decodes as %v; want %v", what, r.Type, want)
	case r.ID != req.ID:
		t.Errorf("%s: the reply is for stream %d; want %d", what, r.ID, req.ID)
	case !r.Failed || r.Status != status:
		t.Errorf("%s: the reply decodes with failed %v status %d; want failed with status %d", what, r.Failed, r.Status, status)
	default:
		return true
	}
	return false
}
