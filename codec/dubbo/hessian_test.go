package dubbo

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"

	hessian "github.com/apache/dubbo-go-hessian2"
	"github.com/apache/dubbo-go-hessian2/java_exception"
)

// TestSkipLibraryValues skips values dubbo-go-hessian2 wrote, each followed by a sentinel, and checks the
// skipper lands on the sentinel.
func TestSkipLibraryValues(t *testing.T) {
	shared := &user{Name: "shared"}
	values := map[string]any{
		"null": nil, "true": true, "false": false,
		"int tiny": int32(-16), "int byte": int32(2000), "int short": int32(-262144), "int full": int32(math.MinInt32),
		"long tiny": int64(15), "long byte": int64(-2048), "long short": int64(262143), "long int": int64(math.MaxInt32),
		"long full":   int64(math.MinInt64),
		"double zero": 0.0, "double one": 1.0, "double byte": -128.0, "double short": 32767.0, "double mill": 12.345,
		"double full": math.Pi, "date": time.UnixMilli(1700000000123), "date minutes": time.Unix(1700000040, 0),
		"string empty": "", "string short": "abc", "string medium": strings.Repeat("m", 1000),
		"string long": strings.Repeat("l", 5000), "string chunked surrogates": strings.Repeat("😀x", 3000),
		"binary short": []byte("b"), "binary medium": bytes.Repeat([]byte{1}, 1000), "binary chunked": bytes.Repeat([]byte{2}, 70000),
		"list untyped": []any{int32(1), "two", nil}, "list typed": []string{"a", "b"}, "list long": make([]int64, 20),
		"map untyped": map[any]any{"a": int32(1), int32(2): []any{}}, "map string": map[string]string{"k": "v"},
		"object":       &user{Name: "ann", Tags: []string{"t"}, Friends: []*user{shared, shared}},
		"throwable":    java_exception.NewThrowable("boom"),
		"typed arrays": []any{[]int32{1}, []float64{1.5}, []bool{true}},
	}
	for name, v := range values {
		t.Run(name, func(t *testing.T) {
			// Two values with one encoder: the second reuses class definitions and type names of the first.
			body := encodeValues(t, v, v, "sentinel")
			r := &hreader{}
			r.reset(body)
			p, err := r.skipValues(0, 2, 0)
			if err != nil {
				t.Fatalf("skip: %v (% x)", err, body[:min(len(body), 64)])
			}
			s, _, _, err := r.readString(p, new([]byte))
			if err != nil || string(s) != "sentinel" {
				t.Fatalf("after skipping: %q, %v", s, err)
			}
			// Every strict prefix is an error, never a panic.
			for i := range p {
				r.reset(body[:i])
				if _, err := r.skipValues(0, 2, 0); err == nil {
					t.Fatalf("prefix %d of %d skipped without error", i, p)
				}
			}
		})
	}
}

// TestSkipGrammar covers encodings dubbo-go-hessian2 does not write but Java's Hessian does (or may).
func TestSkipGrammar(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		err  string
	}{
		{"compact typed list", []byte{0x72, 0x01, 'I', 0x91, 0x92}, ""},
		{"compact untyped list", []byte{0x7a, 0x91, 'N'}, ""},
		{"fixed typed list with a type reference", []byte{'V', 0x90, 0x92, 'T', 'F'}, ""},
		{"fixed untyped list", []byte{'X', 0x91, 'N'}, ""},
		{"variable typed list", []byte{'U', 0x01, 'x', 0x91, 'Z'}, ""},
		{"variable untyped list", []byte{'W', 'Z'}, ""},
		{"typed map with a type reference", []byte{'M', 0x90, 0x01, 'k', 0x91, 'Z'}, ""},
		{"object by O and index", []byte{'C', 0x01, 'P', 0x92, 0x01, 'a', 0x01, 'b', 'O', 0x90, 'N', 'N'}, ""},
		{"object by compact index", []byte{'C', 0x01, 'P', 0x91, 0x01, 'a', 0x60, 0x91}, ""},
		{"two class definitions", []byte{'C', 0x01, 'P', 0x90, 'C', 0x01, 'Q', 0x91, 0x01, 'x', 0x61, 'T'}, ""},
		{"ref", []byte{'Q', 0x90}, ""},
		{"long as int32", []byte{'Y', 0, 0, 0, 1}, ""},
		{"date in minutes", []byte{0x4b, 0, 0, 0, 1}, ""},
		{"binary chunks", []byte{'A', 0, 1, 9, 0x21, 8}, ""},
		{"string chunk then compact", []byte{'R', 0, 1, 'a', 0x01, 'b'}, ""},
		{"string chunk then medium", []byte{'R', 0, 1, 'a', 0x30, 0x01, 'b'}, ""},
		{"string with 4-byte UTF-8", []byte{0x02, 0xf0, 0x9f, 0x98, 0x80}, ""},
		{"reserved tag", []byte{0x40}, "unexpected tag 0x40 at offset 0"},
		{"reserved E", []byte{'E'}, "unexpected tag 0x45"},
		{"end where a value should be", []byte{'Z'}, "unexpected tag 0x5a"},
		{"object without class", []byte{0x60}, "object of class definition 0, but 0 are defined at offset 0"},
		{"object index out of range", []byte{'C', 0x01, 'P', 0x90, 'O', 0x91}, "class definition 1, but 1 are defined"},
		{"negative list length", []byte{'X', 0x8f}, "list length -1 out of range"},
		{"class field not a string", []byte{'C', 0x01, 'P', 0x91, 0x91}, "expected a name string, found tag 0x91"},
		{"string chunk then int", []byte{'R', 0, 1, 'a', 0x91}, "tag 0x91 where a string chunk should continue at offset 4"},
		{"binary chunk then string", []byte{'A', 0, 1, 9, 0x01, 'a'}, "where a binary chunk should continue"},
		{"continuation byte as lead", []byte{0x01, 0x80}, "bad UTF-8 lead byte 0x80"},
		{"4-byte UTF-8 with one unit left", []byte{0x01, 0xf0, 0x9f, 0x98, 0x80}, "one UTF-16 unit remains"},
		{"huge list length", []byte{'X', 'I', 0x7f, 0xff, 0xff, 0xff, 'N'}, "runs past the end"},
		{"deep nesting", bytes.Repeat([]byte{'W'}, 10000), "nested deeper than 256"},
		{"deep objects", append([]byte{'C', 0x01, 'P', 0x91, 0x01, 'a'}, bytes.Repeat([]byte{0x60}, 1000)...), "nested deeper than 256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &hreader{}
			r.reset(tt.in)
			p, err := r.skipValue(0, 0)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || p != len(tt.in) {
				t.Fatalf("skip = %d, %v; want %d", p, err, len(tt.in))
			}
		})
	}
}

// TestStrings checks strings both ways against dubbo-go-hessian2: what it writes, readString reads, and what
// appendString writes, it reads.
func TestStrings(t *testing.T) {
	tests := []string{
		"", "a", strings.Repeat("x", 31), strings.Repeat("x", 32), strings.Repeat("x", 1023), strings.Repeat("x", 1024),
		"grüß", "服务", "😀", "a😀b🎉c", strings.Repeat("é", 40000), strings.Repeat("x", chunkUnits-1) + "😀",
		strings.Repeat("x", chunkUnits) + "y", strings.Repeat("😀", chunkUnits), strings.Repeat("ab", 70000),
	}
	for _, s := range tests {
		name := s
		if len(name) > 20 {
			name = name[:20] + "..."
		}
		t.Run(name, func(t *testing.T) {
			lib := encodeValues(t, s)
			r := &hreader{}
			r.reset(lib)
			got, next, null, err := r.readString(0, new([]byte))
			if err != nil || null || next != len(lib) || string(got) != s {
				t.Fatalf("reading dubbo-go-hessian2's encoding: len %d next %d/%d null %v err %v", len(got), next, len(lib), null, err)
			}
			ours := appendString(nil, s)
			v, err := hessian.NewDecoder(ours).Decode()
			if err != nil || v != s {
				t.Fatalf("dubbo-go-hessian2 reading ours: %v (len %d)", err, len(ours))
			}
			r.reset(ours)
			if got, next, _, err = r.readString(0, new([]byte)); err != nil || next != len(ours) || string(got) != s {
				t.Fatalf("reading ours: next %d/%d err %v", next, len(ours), err)
			}
		})
	}
	// Invalid UTF-8 in a Go string is written as U+FFFD.
	v, err := hessian.NewDecoder(appendString(nil, "a\xffb")).Decode()
	if err != nil || v != "a\uFFFDb" {
		t.Errorf("invalid UTF-8: %q, %v", v, err)
	}
}

func TestCESU(t *testing.T) {
	// U+1F600 as two 3-byte surrogates, split across a chunk boundary as Java may not but others could.
	in := []byte{'R', 0, 1, 0xed, 0xa0, 0xbd, 0x01, 0xed, 0xb8, 0x80}
	r := &hreader{}
	r.reset(in)
	got, _, _, err := r.readString(0, new([]byte))
	if err != nil || string(got) != "😀" {
		t.Fatalf("got %q, %v", got, err)
	}
	// A lone surrogate stays as it is.
	lone := []byte{0x01, 0xed, 0xa0, 0xbd}
	r.reset(lone)
	if got, _, _, err = r.readString(0, new([]byte)); err != nil || !bytes.Equal(got, lone[1:]) {
		t.Fatalf("lone surrogate: % x, %v", got, err)
	}
}

func TestAppendText(t *testing.T) {
	tests := []struct {
		v    any
		want string
		ok   bool
	}{
		{"s", "s", true}, {nil, "", true}, {true, "true", true}, {false, "false", true},
		{int32(-7), "-7", true}, {int32(300000), "300000", true}, {int64(1) << 50, "1125899906842624", true},
		{1.0, "1.0", true}, {0.0, "0.0", true}, {-2.5, "-2.5", true}, {12.345, "12.345", true}, {1e7, "1.0E7", true},
		{1.5e-5, "1.5E-5", true}, {123456789.0, "1.23456789E8", true}, {math.Inf(-1), "-Infinity", true}, {math.NaN(), "NaN", true},
		{time.UnixMilli(1700000000123), "2023-11-14T22:13:20.123Z", true}, {time.Unix(1700000040, 0), "2023-11-14T22:14:00.000Z", true},
		{[]byte("raw"), "raw", true},
		{[]string{"a"}, "", false}, {map[string]string{"a": "b"}, "", false}, {&user{Name: "x"}, "", false},
	}
	for _, tt := range tests {
		body := encodeValues(t, tt.v, "end")
		r := &hreader{}
		r.reset(body)
		got, next, ok, err := r.appendText([]byte("pre:"), 0, new([]byte))
		if err != nil || ok != tt.ok || string(got) != "pre:"+tt.want {
			t.Errorf("%T %v: %q ok %v err %v; want %q ok %v", tt.v, tt.v, got, ok, err, tt.want, tt.ok)
			continue
		}
		if s, _, _, _ := r.readString(next, new([]byte)); string(s) != "end" {
			t.Errorf("%T %v: next %d does not reach the following value", tt.v, tt.v, next)
		}
	}
}

func TestReadIntForms(t *testing.T) {
	tests := []struct {
		in   []byte
		want int64
	}{
		{[]byte{0x80}, -16}, {[]byte{0xbf}, 47}, {[]byte{0xc0, 0x00}, -2048}, {[]byte{0xcf, 0xff}, 2047},
		{[]byte{0xd0, 0, 0}, -262144}, {[]byte{0xd7, 0xff, 0xff}, 262143}, {[]byte{'I', 0x80, 0, 0, 0}, math.MinInt32},
		{[]byte{0xd8}, -8}, {[]byte{0xef}, 15}, {[]byte{0xf0, 0}, -2048}, {[]byte{0xff, 0xff}, 2047},
		{[]byte{0x38, 0, 0}, -262144}, {[]byte{0x3f, 0xff, 0xff}, 262143}, {[]byte{'Y', 0xff, 0xff, 0xff, 0xff}, -1},
		{[]byte{'L', 0x80, 0, 0, 0, 0, 0, 0, 0}, math.MinInt64},
	}
	for _, tt := range tests {
		r := &hreader{}
		r.reset(tt.in)
		v, next, err := r.readInt(0)
		if err != nil || v != tt.want || next != len(tt.in) {
			t.Errorf("% x: %d next %d err %v; want %d", tt.in, v, next, err, tt.want)
		}
	}
}
