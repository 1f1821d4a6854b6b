package codectest

import (
	"fmt"
	"maps"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/meltemi-mesh/meltemi/codec"
)

// view is what a decoded message says, metadata loaded, so that two decodes can be compared.
type view struct {
	typ     codec.MessageType
	id      uint64
	status  int32
	failed  bool
	meta    map[string]string
	dups    []string
	metaErr error
}

// observe reads everything msg says, running its deferred metadata loader.
func observe(msg *codec.Message) view {
	v := view{typ: msg.Type, id: msg.ID, status: msg.Status, failed: msg.Failed, meta: map[string]string{}}
	msg.Metadata.All(func(key, value string) bool {
		if _, dup := v.meta[key]; dup {
			v.dups = append(v.dups, key)
		}
		v.meta[key] = value
		return true
	})
	v.metaErr = msg.Metadata.Err()
	return v
}

func (v view) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v id %d status %d failed %v metadata %s", v.typ, v.id, v.status, v.failed, formatMeta(v.meta))
	if v.metaErr != nil {
		fmt.Fprintf(&b, " (metadata error: %v)", v.metaErr)
	}
	return b.String()
}

// same reports whether a and b say the same, ignoring the id when asked. Metadata errors are compared by
// presence only: their text may quote the id.
func (v view) same(w view, ignoreID bool) bool {
	return v.typ == w.typ && (ignoreID || v.id == w.id) && v.status == w.status && v.failed == w.failed &&
		maps.Equal(v.meta, w.meta) && (v.metaErr == nil) == (w.metaErr == nil)
}

// formatMeta prints metadata in key order, so failures read the same on every run.
func formatMeta(m map[string]string) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%q", k, clip(m[k]))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// diffMeta says how got differs from want, key by key.
func diffMeta(got, want map[string]string) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(want)) {
		g, ok := got[k]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("%s missing (want %q)", k, clip(want[k])))
		case g != want[k]:
			out = append(out, fmt.Sprintf("%s = %q, want %q", k, clip(g), clip(want[k])))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[k]; !ok {
			out = append(out, fmt.Sprintf("%s = %q unexpected", k, clip(got[k])))
		}
	}
	return strings.Join(out, "; ")
}

// clip shortens long values in failure messages.
func clip(s string) string {
	if len(s) > 80 {
		return s[:60] + fmt.Sprintf("...(%d bytes)", len(s))
	}
	return s
}

// hexPrefix shows the first bytes of an input, enough to recognise it.
func hexPrefix(b []byte) string {
	if len(b) > 32 {
		return fmt.Sprintf("% x ...(%d bytes)", b[:32], len(b))
	}
	return fmt.Sprintf("% x", b)
}

// diffOffsets lists the offsets where a and b differ, for failures about bytes that should not have changed.
func diffOffsets(a, b []byte) string {
	var offs []string
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			if len(offs) == 16 {
				offs = append(offs, "...")
				break
			}
			offs = append(offs, fmt.Sprint(i))
		}
	}
	if len(a) != len(b) {
		offs = append(offs, fmt.Sprintf("length %d vs %d", len(a), len(b)))
	}
	return strings.Join(offs, ",")
}

// sameSlice reports whether a is exactly b: same start, same length. A Message's Frame must be the bytes it was
// decoded from or encoded into, not a copy.
func sameSlice(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	return len(a) == 0 || &a[0] == &b[0]
}

// clone copies b into an array of exactly its length, so that reading past len(b) by reslicing panics.
func clone(b []byte) []byte {
	c := make([]byte, len(b))
	copy(c, b)
	return c
}

// proxyCopy is what the proxy keeps of a request it may answer later: the header fields, Private and the
// metadata decoded so far, but not the frame, whose buffer is reused meanwhile.
func proxyCopy(msg *codec.Message) *codec.Message {
	req := &codec.Message{Type: msg.Type, ID: msg.ID, Status: msg.Status, Private: msg.Private}
	msg.Metadata.CopyDecoded(&req.Metadata)
	return req
}

// scribble overwrites a buffer the way the proxy's next read does, so a codec that kept a reference to it
// reads garbage.
func scribble(b []byte) {
	for i := range b {
		b[i] = 0xa5
	}
}

// guard runs f and turns a panic into a failure that says what was running. It reports whether f returned.
func guard(t tester, what string, f func()) (ok bool) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("%s panicked: %v\n%s", what, r, debug.Stack())
			ok = false
		}
	}()
	f()
	return true
}

// recoverTo reports a panic that escaped the checks of a property, so the other properties still run.
func recoverTo(t tester, property string) {
	if r := recover(); r != nil {
		t.Errorf("%s: panic: %v\n%s", property, r, debug.Stack())
	}
}
