package codectest

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"

	"github.com/meltemi-mesh/meltemi/codec"
)

// input is one hostile byte string.
type input struct {
	name string
	data []byte
}

// hostileInputs are bytes a peer may send: random, uniform, and the samples with their length fields blown
// up, bits flipped, headers cut short or junk after them. The random source has a fixed seed, so a failure
// names an input that the next run builds again.
func hostileInputs(samples []Sample) []input {
	rng := rand.New(rand.NewPCG(0x6d656c74, 0x656d69))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	var ins []input
	for _, n := range []int{1, 2, 3, 4, 8, 12, 16, 17, 24, 32, 64, 256, 4096, 65536} {
		ins = append(ins, input{fmt.Sprintf("random-%d", n), random(n)})
	}
	for _, n := range []int{1, 2, 4, 8, 16, 32, 64, 4096} {
		ins = append(ins,
			input{fmt.Sprintf("zeros-%d", n), make([]byte, n)},
			input{fmt.Sprintf("ones-%d", n), bytes.Repeat([]byte{0xff}, n)})
	}
	// Length fields sit in the first bytes of a frame; a 4-byte window at every offset there covers them
	// whatever their width and position.
	windows := [][4]byte{{0xff, 0xff, 0xff, 0xff}, {0x7f, 0xff, 0xff, 0xff}, {0x80, 0, 0, 0}, {0, 0, 0, 0}}
	for i, smp := range samples {
		next := samples[(i+1)%len(samples)]
		f := smp.Frame
		for off := 0; off+4 <= min(len(f), 28); off++ {
			for _, w := range windows {
				b := clone(f)
				copy(b[off:], w[:])
				ins = append(ins, input{fmt.Sprintf("%s/%x@%d", smp.Name, w, off), b})
			}
		}
		for off := range min(len(f), 48) {
			b := clone(f)
			b[off] ^= 0xff
			ins = append(ins, input{fmt.Sprintf("%s/flip@%d", smp.Name, off), b})
		}
		for cut := 1; cut < min(len(f), 24); cut++ {
			b := append(clone(f[:cut]), next.Frame...)
			ins = append(ins, input{fmt.Sprintf("%s/cut-%d+%s", smp.Name, cut, next.Name), b})
		}
		ins = append(ins, input{smp.Name + "/random-tail", append(clone(f), random(64)...)})
	}
	return ins
}

// checkInput checks the codec against one hostile input: no panic, lengths within bounds, and what decodes
// behaves like a real frame.
func (k *kit) checkInput(t tester, name string, data []byte) {
	t.Helper()
	what := fmt.Sprintf("input %s (%s)", name, hexPrefix(data))
	k.scan(t, what, k.downstream, data)
	k.scan(t, what+" read as replies", k.upstream, data)
	if sn, ok := k.factory.(codec.Sniffer); ok {
		for _, n := range []int{min(len(data), 16), len(data)} {
			var r codec.SniffResult
			if guard(t, fmt.Sprintf("%s: Sniff of %d bytes", what, n), func() { r = sn.Sniff(data[:n:n]) }) && r > codec.NeedMore {
				t.Errorf("%s: Sniff of %d bytes = %d, which is not a SniffResult", what, n, r)
			}
		}
	}
}

// maxFrames bounds the frames one input is read as.
const maxFrames = 8

// scan decodes data frame after frame, as a connection would, with a codec from newCodec.
func (k *kit) scan(t tester, what string, newCodec func() codec.Codec, data []byte) {
	t.Helper()
	c := newCodec()
	buf := clone(data)
	msg := &codec.Message{}
	for i := 0; i < maxFrames && len(buf) > 0; i++ {
		w := fmt.Sprintf("%s, frame %d", what, i+1)
		msg.Reset()
		var n int
		var err error
		if !guard(t, w+": Decode", func() { n, err = c.Decode(buf, msg) }) {
			return
		}
		var fe *codec.FrameError
		switch {
		case err == codec.ErrIncomplete:
			if n < 0 || n != 0 && n <= len(buf) {
				t.Errorf("%s: Decode = %d, ErrIncomplete for %d bytes; n must be 0 or the length of the whole frame, which is more than the bytes given",
					w, n, len(buf))
			}
			return
		case errors.Is(err, codec.ErrIncomplete):
			t.Errorf("%s: Decode wraps ErrIncomplete (%v); return it as it is, the proxy compares with ==", w, err)
			return
		case errors.As(err, &fe) && fe.CanReply:
			k.checkCanReply(t, w, c, msg, fe.Reason)
			return
		case err != nil:
			return
		case n <= 0 || n > len(buf):
			t.Errorf("%s: Decode = %d, nil for %d bytes; a decoded frame is between 1 and len(buf) bytes", w, n, len(buf))
			return
		case !sameSlice(msg.Frame, buf[:n]):
			t.Errorf("%s: Decode = %d, nil but msg.Frame (%d bytes) is not buf[:n]", w, n, len(msg.Frame))
			return
		}
		k.checkDecoded(t, w, newCodec, msg)
		buf = buf[n:]
	}
}

// checkCanReply checks a refused frame the codec says the proxy can answer.
func (k *kit) checkCanReply(t tester, what string, c codec.Codec, msg *codec.Message, reason string) {
	t.Helper()
	if msg.Type != codec.Request {
		t.Errorf("%s: Decode refused the frame (%s) with CanReply set, but msg.Type is %v; CanReply promises a request that ErrorReply can answer",
			what, reason, msg.Type)
		return
	}
	k.checkOneErrorReply(t, what+" (refused with CanReply)", c, proxyCopy(msg), codec.BadRequest, reason)
}

// checkDecoded exercises, on a frame decoded from hostile bytes, what the proxy may do with any frame:
// decode it again, re-encode it, rewrite its id, answer it and edit it.
func (k *kit) checkDecoded(t tester, what string, newCodec func() codec.Codec, msg *codec.Message) {
	t.Helper()
	frame := clone(msg.Frame)
	var v view
	if !guard(t, what+": loading metadata", func() { v = observe(msg) }) {
		return
	}
	if len(v.dups) > 0 {
		t.Errorf("%s: metadata holds %q more than once; it is a set", what, v.dups)
	}

	// decodeCopy decodes a copy of b with a new codec, reporting failures as the same bytes decoding differently.
	decodeCopy := func(step string, b []byte) (codec.Codec, *codec.Message, view, bool) {
		c := newCodec()
		m := &codec.Message{}
		var n int
		var err error
		var mv view
		if !guard(t, what+": "+step, func() { n, err = c.Decode(clone(b), m); mv = observe(m) }) {
			return nil, nil, view{}, false
		}
		if err != nil || n != len(b) {
			t.Errorf("%s: %s: Decode of %d bytes = %d, %v; the frame decoded before", what, step, len(b), n, err)
			return nil, nil, view{}, false
		}
		return c, m, mv, true
	}

	c, m1, v1, ok := decodeCopy("decoding a copy with a new codec", frame)
	if !ok {
		return
	}
	if !v1.same(v, false) {
		t.Errorf("%s: the same bytes decode differently on a new codec: %v, then %v", what, v, v1)
	}
	var out []byte
	var err error
	if !guard(t, what+": Encode with an empty mutation", func() { out, err = c.Encode(nil, m1, &codec.Mutation{}) }) {
		return
	}
	if err != nil {
		t.Errorf("%s: Encode with an empty mutation: %v; it must copy the frame", what, err)
		return
	}
	if !bytes.Equal(out, frame) {
		t.Errorf("%s: Encode with an empty mutation changed the frame at offsets %s", what, diffOffsets(out, frame))
		return
	}
	if _, _, v2, ok := decodeCopy("decoding what Encode wrote", out); ok && !v2.same(v1, false) {
		t.Errorf("%s: decode, Encode with an empty mutation, decode: %v became %v", what, v1, v2)
	}

	if k.s.Multiplexing {
		if c3, m3, _, ok := decodeCopy("decoding a copy for SetID", frame); ok {
			id := uint64(1)
			if v.id == 1 {
				id = 2
			}
			if !guard(t, fmt.Sprintf("%s: SetID(%d)", what, id), func() { c3.SetID(m3, id) }) {
				return
			}
			if _, _, v4, ok := decodeCopy(fmt.Sprintf("decoding after SetID(%d)", id), m3.Frame); ok && (!v4.same(v, true) || v4.id != id) {
				t.Errorf("%s: after SetID(%d) the frame decodes to %v; was %v: SetID must change the id and nothing else", what, id, v4, v)
			}
		}
	}

	switch v.typ {
	case codec.Request, codec.Oneway:
		// One kind per frame, varied by its length: the error-reply check covers every kind on real frames.
		kind := codec.ErrorKinds[len(frame)%len(codec.ErrorKinds)]
		k.checkOneErrorReply(t, what, c, proxyCopy(m1), kind, "codectest")
	case codec.Heartbeat:
		k.checkHeartbeatReply(t, what, c, m1)
	}

	if (v.typ == codec.Request || v.typ == codec.Oneway) && len(k.s.MutableKeys) > 0 && v.metaErr == nil {
		c5, m5, _, ok := decodeCopy("decoding a copy for a mutation", frame)
		if !ok {
			return
		}
		key := k.s.MutableKeys[0]
		mut := &codec.Mutation{Set: []codec.KeyValue{{Key: key, Value: "codectest-fuzz"}}, Remove: k.s.MutableKeys[1:]}
		if !guard(t, what+": Encode with a mutation", func() { out, err = c5.Encode(nil, m5, mut) }) || err != nil {
			return // a codec may refuse an edit it cannot make; it says so with the error
		}
		_, _, v6, ok := decodeCopy("decoding the edited frame", out)
		if !ok {
			return
		}
		if got, found := v6.meta[key]; !found || got != "codectest-fuzz" {
			t.Errorf("%s: mutation (%s): %s = %q, %v after Encode", what, describeMutation(mut), key, got, found)
		}
		for _, gone := range mut.Remove {
			if _, found := v6.meta[gone]; found {
				t.Errorf("%s: mutation (%s): %s still there after Encode", what, describeMutation(mut), gone)
			}
		}
		if v6.typ != v.typ || v6.id != v.id {
			t.Errorf("%s: mutation (%s): the edited frame is %v id %d; was %v id %d", what, describeMutation(mut), v6.typ, v6.id, v.typ, v.id)
		}
	}
}
