package codec

// Interner turns byte slices into strings without allocating for values it has seen before. A codec keeps one
// per connection, where the same interface and method names come back on every request, so decoding them costs
// a map lookup instead of an allocation. It is not safe for concurrent use.
type Interner struct {
	m map[string]string
}

// internLimit bounds an Interner, so a peer sending ever-new names cannot grow it without end.
const internLimit = 512

// String returns b as a string, reusing an earlier string with the same bytes.
func (in *Interner) String(b []byte) string {
	if s, ok := in.m[string(b)]; ok { // the conversion in a map index does not allocate
		return s
	}
	s := string(b)
	if in.m == nil {
		in.m = make(map[string]string, 16)
	}
	if len(in.m) < internLimit {
		in.m[s] = s
	}
	return s
}
