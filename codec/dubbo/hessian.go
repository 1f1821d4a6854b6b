package dubbo

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// This file reads and writes the few Hessian 2 values the codec needs, and skips every other one without
// building it. Everything works on offsets into a borrowed byte slice, so skipping allocates nothing; errors are
// the only values created, and only on bad input.

// Hessian 2 tags the codec names. The full grammar is in skipValue.
const (
	tagNull        = 'N'
	tagTrue        = 'T'
	tagFalse       = 'F'
	tagMapUntyped  = 'H'
	tagMapTyped    = 'M'
	tagEnd         = 'Z'
	tagClassDef    = 'C'
	tagObject      = 'O'
	tagRef         = 'Q'
	tagStringChunk = 'R'
	tagStringFinal = 'S'
	tagBinaryChunk = 'A'
	tagBinaryFinal = 'B'
	tagInt         = 'I'
	tagLong        = 'L'
	tagLongInt     = 'Y'
	tagDouble      = 'D'
	tagDoubleZero  = 0x5b
	tagDoubleOne   = 0x5c
	tagDoubleByte  = 0x5d
	tagDoubleShort = 0x5e
	tagDoubleMill  = 0x5f // Java's Hessian writes a double that is a whole number of thousandths as int32 / 1000
	tagDateMillis  = 0x4a
	tagDateMinutes = 0x4b
	tagListVarType = 'U'
	tagListFixType = 'V'
	tagListVar     = 'W'
	tagListFix     = 'X'
)

const (
	// maxDepth bounds the nesting of lists, maps and objects the skipper follows. Real argument graphs stay far
	// below it; a hostile frame of nested list tags would otherwise recurse once per byte.
	maxDepth = 256
	// maxClasses bounds the class definitions of one body, and with it the skipper's table.
	maxClasses = 1 << 16
	// chunkUnits is the longest string chunk written, in UTF-16 units, as Java's Hessian2Output chunks.
	chunkUnits = 0x8000
)

// hessianError is a malformed Hessian 2 value: what is wrong and where, as an offset into the frame.
type hessianError struct {
	off    int
	reason string
}

func (e *hessianError) Error() string {
	return "hessian2: " + e.reason + " at offset " + strconv.Itoa(e.off)
}

func errAt(off int, format string, args ...any) error {
	return &hessianError{off: off, reason: fmt.Sprintf(format, args...)}
}

func truncated(off int) error {
	return &hessianError{off: off, reason: "value runs past the end of the body"}
}

// hreader walks the Hessian 2 values of one body. The class definitions of a body are numbered in order and
// objects refer to them by number, so the reader remembers each one's field count; the table is reused from
// body to body.
type hreader struct {
	b       []byte
	classes []int
	// sawRef and sawClass record that a reference or a class definition was skipped since they were last
	// cleared: dropping or replacing a compound value then could renumber what later values refer to.
	sawRef, sawClass bool
}

// reset points the reader at a new body, forgetting the previous one's class definitions.
func (r *hreader) reset(b []byte) {
	r.b = b
	r.classes = r.classes[:0]
	r.sawRef, r.sawClass = false, false
}

// skip returns the offset n bytes after p, or an error if the body ends first.
func (r *hreader) skip(p, n int) (int, error) {
	if n < 0 || n > len(r.b)-p {
		return 0, truncated(p)
	}
	return p + n, nil
}

// spanUnits finds the end of n UTF-16 units of Hessian's UTF-8 starting at p. A character outside the BMP
// counts two units, whether it arrives as Java writes it (two 3-byte surrogates, "CESU-8") or as one 4-byte
// UTF-8 sequence; surrogates reports the former, which decoding must rewrite.
func (r *hreader) spanUnits(p, n int) (end int, surrogates bool, err error) {
	b := r.b
	// Names and most attachment values are ASCII, where units and bytes agree: check 8 bytes at a time, then
	// walk characters from the first non-ASCII byte.
	if n <= len(b)-p {
		s := b[p : p+n]
		i := 0
		for ; i+8 <= len(s); i += 8 {
			if binary.LittleEndian.Uint64(s[i:])&0x8080808080808080 != 0 {
				break
			}
		}
		for i < len(s) && s[i] < utf8.RuneSelf {
			i++
		}
		if i == len(s) {
			return p + n, false, nil
		}
		p += i
		n -= i
	}
	for n > 0 {
		if p >= len(b) {
			return 0, false, truncated(p)
		}
		c := b[p]
		w, units := 1, 1
		switch {
		case c < 0x80:
		case c < 0xc0:
			return 0, false, errAt(p, "bad UTF-8 lead byte 0x%02x in string", c)
		case c < 0xe0:
			w = 2
		case c < 0xf0:
			if c == 0xed && p+1 < len(b) && b[p+1] >= 0xa0 {
				surrogates = true
			}
			w = 3
		case c < 0xf8:
			if n < 2 {
				return 0, false, errAt(p, "4-byte UTF-8 sequence where one UTF-16 unit remains")
			}
			w, units = 4, 2
		default:
			return 0, false, errAt(p, "bad UTF-8 lead byte 0x%02x in string", c)
		}
		if w > len(b)-p {
			return 0, false, truncated(p)
		}
		p += w
		n -= units
	}
	return p, surrogates, nil
}

// stringChunk reads the header of one string chunk at p: its length in units, where its data starts, and
// whether more chunks follow. ok is false when p does not hold a string tag.
func (r *hreader) stringChunk(p int) (units, data int, final, ok bool, err error) {
	if p >= len(r.b) {
		return 0, 0, false, false, truncated(p)
	}
	tag := r.b[p]
	switch {
	case tag <= 0x1f:
		return int(tag), p + 1, true, true, nil
	case tag >= 0x30 && tag <= 0x33:
		if p+2 > len(r.b) {
			return 0, 0, false, false, truncated(p)
		}
		return int(tag-0x30)<<8 | int(r.b[p+1]), p + 2, true, true, nil
	case tag == tagStringChunk || tag == tagStringFinal:
		if p+3 > len(r.b) {
			return 0, 0, false, false, truncated(p)
		}
		return int(binary.BigEndian.Uint16(r.b[p+1:])), p + 3, tag == tagStringFinal, true, nil
	}
	return 0, 0, false, false, nil
}

// skipString skips the string at p, whose first chunk is known to be there.
func (r *hreader) skipString(p int) (int, error) {
	for {
		units, data, final, ok, err := r.stringChunk(p)
		if err != nil {
			return 0, err
		}
		if !ok {
			return 0, errAt(p, "tag 0x%02x where a string chunk should continue", r.b[p])
		}
		if p, _, err = r.spanUnits(data, units); err != nil {
			return 0, err
		}
		if final {
			return p, nil
		}
	}
}

// readString decodes the string (or null) at p into UTF-8. The bytes are borrowed from the body when they
// need no rewriting, else written to *scratch; either way they are valid only until the next call.
func (r *hreader) readString(p int, scratch *[]byte) (s []byte, next int, null bool, err error) {
	if p >= len(r.b) {
		return nil, 0, false, truncated(p)
	}
	if r.b[p] == tagNull {
		return nil, p + 1, true, nil
	}
	units, data, final, ok, err := r.stringChunk(p)
	if err != nil {
		return nil, 0, false, err
	}
	if !ok {
		return nil, 0, false, errAt(p, "expected a string, found tag 0x%02x", r.b[p])
	}
	end, sur, err := r.spanUnits(data, units)
	if err != nil {
		return nil, 0, false, err
	}
	if final && !sur {
		return r.b[data:end], end, false, nil
	}
	buf := append((*scratch)[:0], r.b[data:end]...)
	for p = end; !final; {
		if units, data, final, ok, err = r.stringChunk(p); err != nil {
			return nil, 0, false, err
		}
		if !ok {
			return nil, 0, false, errAt(p, "tag 0x%02x where a string chunk should continue", r.b[p])
		}
		if end, sur, err = r.spanUnits(data, units); err != nil {
			return nil, 0, false, err
		}
		buf = append(buf, r.b[data:end]...)
		p = end
	}
	// Surrogate pairs may straddle chunks, so they are joined after the chunks are.
	buf = cesuToUTF8(buf)
	*scratch = buf
	return buf, p, false, nil
}

// cesuToUTF8 rewrites, in place, each surrogate pair encoded as two 3-byte sequences into the 4-byte UTF-8
// of its character; a Go string then holds what Java's String held. A pair shrinks from 6 bytes to 4, so the
// write position never passes the read position. Lone surrogates are left as they are.
func cesuToUTF8(b []byte) []byte {
	w := 0
	for i := 0; i < len(b); {
		if i+6 <= len(b) && b[i] == 0xed && b[i+1]&0xf0 == 0xa0 && b[i+3] == 0xed && b[i+4]&0xf0 == 0xb0 {
			hi := rune(b[i+1]&0x0f)<<6 | rune(b[i+2]&0x3f)
			lo := rune(b[i+4]&0x0f)<<6 | rune(b[i+5]&0x3f)
			w += utf8.EncodeRune(b[w:], 0x10000+hi<<10|lo)
			i += 6
			continue
		}
		b[w] = b[i]
		w++
		i++
	}
	return b[:w]
}

// readInt reads an int or long in any of their encodings, as lengths, indexes and the response type are.
func (r *hreader) readInt(p int) (int64, int, error) {
	b := r.b
	if p >= len(b) {
		return 0, 0, truncated(p)
	}
	tag := b[p]
	switch {
	case tag >= 0x80 && tag <= 0xbf:
		return int64(tag) - 0x90, p + 1, nil
	case tag >= 0xc0 && tag <= 0xcf:
		if p+2 > len(b) {
			return 0, 0, truncated(p)
		}
		return (int64(tag)-0xc8)<<8 | int64(b[p+1]), p + 2, nil
	case tag >= 0xd0 && tag <= 0xd7:
		if p+3 > len(b) {
			return 0, 0, truncated(p)
		}
		return (int64(tag)-0xd4)<<16 | int64(b[p+1])<<8 | int64(b[p+2]), p + 3, nil
	case tag >= 0xd8 && tag <= 0xef:
		return int64(tag) - 0xe0, p + 1, nil
	case tag >= 0xf0:
		if p+2 > len(b) {
			return 0, 0, truncated(p)
		}
		return (int64(tag)-0xf8)<<8 | int64(b[p+1]), p + 2, nil
	case tag >= 0x38 && tag <= 0x3f:
		if p+3 > len(b) {
			return 0, 0, truncated(p)
		}
		return (int64(tag)-0x3c)<<16 | int64(b[p+1])<<8 | int64(b[p+2]), p + 3, nil
	case tag == tagInt || tag == tagLongInt:
		if p+5 > len(b) {
			return 0, 0, truncated(p)
		}
		return int64(int32(binary.BigEndian.Uint32(b[p+1:]))), p + 5, nil
	case tag == tagLong:
		if p+9 > len(b) {
			return 0, 0, truncated(p)
		}
		return int64(binary.BigEndian.Uint64(b[p+1:])), p + 9, nil
	}
	return 0, 0, errAt(p, "expected an int, found tag 0x%02x", tag)
}

// readCount reads a non-negative int used as a length or index.
func (r *hreader) readCount(p int, what string) (int, int, error) {
	v, next, err := r.readInt(p)
	if err != nil {
		return 0, 0, err
	}
	if v < 0 || v > math.MaxInt32 {
		return 0, 0, errAt(p, "%s %d out of range", what, v)
	}
	return int(v), next, nil
}

// skipType skips the type of a typed list or map: a type name, or an int referring to an earlier one.
func (r *hreader) skipType(p int) (int, error) {
	if _, _, _, ok, err := r.stringChunk(p); err != nil {
		return 0, err
	} else if ok {
		return r.skipString(p)
	}
	// A type reference points at an earlier type name, so it is renumbered like a value reference.
	r.sawRef = true
	_, p, err := r.readInt(p)
	return p, err
}

// skipBinary skips binary data at p, whose tag is known to be a binary one.
func (r *hreader) skipBinary(p int) (int, error) {
	for {
		if p >= len(r.b) {
			return 0, truncated(p)
		}
		tag := r.b[p]
		switch {
		case tag >= 0x20 && tag <= 0x2f:
			return r.skip(p+1, int(tag-0x20))
		case tag >= 0x34 && tag <= 0x37:
			if p+2 > len(r.b) {
				return 0, truncated(p)
			}
			return r.skip(p+2, int(tag-0x34)<<8|int(r.b[p+1]))
		case tag == tagBinaryChunk || tag == tagBinaryFinal:
			if p+3 > len(r.b) {
				return 0, truncated(p)
			}
			next, err := r.skip(p+3, int(binary.BigEndian.Uint16(r.b[p+1:])))
			if err != nil || tag == tagBinaryFinal {
				return next, err
			}
			p = next
		default:
			return 0, errAt(p, "tag 0x%02x where a binary chunk should continue", tag)
		}
	}
}

// classDef reads a class definition at p (after its 'C'): a name, a field count and the field names.
func (r *hreader) classDef(p int) (int, error) {
	r.sawClass = true
	start := p - 1
	if len(r.classes) >= maxClasses {
		return 0, errAt(start, "more than %d class definitions", maxClasses)
	}
	var err error
	if p, err = r.skipTypeName(p); err != nil {
		return 0, err
	}
	fields, p, err := r.readCount(p, "class field count")
	if err != nil {
		return 0, err
	}
	for range fields {
		if p, err = r.skipTypeName(p); err != nil {
			return 0, err
		}
	}
	r.classes = append(r.classes, fields)
	return p, nil
}

// skipTypeName skips a string that must be there (class and field names).
func (r *hreader) skipTypeName(p int) (int, error) {
	if _, _, _, ok, err := r.stringChunk(p); err != nil {
		return 0, err
	} else if !ok {
		return 0, errAt(p, "expected a name string, found tag 0x%02x", r.b[p])
	}
	return r.skipString(p)
}

// skipValues skips n values.
func (r *hreader) skipValues(p, n, depth int) (int, error) {
	var err error
	for range n {
		if p, err = r.skipValue(p, depth); err != nil {
			return 0, err
		}
	}
	return p, nil
}

// skipUntilEnd skips values up to and including the 'Z' that closes a variable-length list or map.
func (r *hreader) skipUntilEnd(p, depth int) (int, error) {
	var err error
	for {
		if p >= len(r.b) {
			return 0, truncated(p)
		}
		if r.b[p] == tagEnd {
			return p + 1, nil
		}
		if p, err = r.skipValue(p, depth); err != nil {
			return 0, err
		}
	}
}

// skipObject skips the fields of an instance of class definition idx.
func (r *hreader) skipObject(p, idx, at, depth int) (int, error) {
	if idx < 0 || idx >= len(r.classes) {
		return 0, errAt(at, "object of class definition %d, but %d are defined", idx, len(r.classes))
	}
	return r.skipValues(p, r.classes[idx], depth)
}

// skipValue skips one value at p and returns the offset after it. It follows the Hessian 2.0 grammar:
//
//	x00-x1f string <32 units   x20-x2f binary <16 bytes  x30-x33 string <1024  x34-x37 binary <1024
//	x38-x3f long, 3 bytes      A/B binary chunks         C class definition    D double
//	F false  H untyped map     I int   J (x4a) date ms    K (x4b) date min      L long   M typed map
//	N null   O object          Q ref   R/S string chunks  T true  U/V typed lists  W/X untyped lists
//	Y long as int32            x5b-x5f doubles            x60-x6f object        x70-x77 typed list <8
//	x78-x7f untyped list <8    x80-xbf int  xc0-xcf int, 2 bytes  xd0-xd7 int, 3 bytes
//	xd8-xef long               xf0-xff long, 2 bytes
func (r *hreader) skipValue(p, depth int) (int, error) {
	if depth > maxDepth {
		return 0, errAt(p, "values nested deeper than %d", maxDepth)
	}
	b := r.b
	var err error
	for {
		if p >= len(b) {
			return 0, truncated(p)
		}
		tag := b[p]
		switch {
		case tag <= 0x1f || tag >= 0x30 && tag <= 0x33 || tag == tagStringChunk || tag == tagStringFinal:
			return r.skipString(p)
		case tag >= 0x20 && tag <= 0x2f || tag >= 0x34 && tag <= 0x37 || tag == tagBinaryChunk || tag == tagBinaryFinal:
			return r.skipBinary(p)
		case tag >= 0x38 && tag <= 0x3f:
			return r.skip(p, 3)
		case tag >= 0x60 && tag <= 0x6f:
			return r.skipObject(p+1, int(tag-0x60), p, depth+1)
		case tag >= 0x70 && tag <= 0x77:
			if p, err = r.skipType(p + 1); err != nil {
				return 0, err
			}
			return r.skipValues(p, int(tag-0x70), depth+1)
		case tag >= 0x78 && tag <= 0x7f:
			return r.skipValues(p+1, int(tag-0x78), depth+1)
		case tag >= 0x80 && tag <= 0xbf, tag >= 0xd8 && tag <= 0xef:
			return p + 1, nil
		case tag >= 0xc0 && tag <= 0xcf, tag >= 0xf0:
			return r.skip(p, 2)
		case tag >= 0xd0 && tag <= 0xd7:
			return r.skip(p, 3)
		}
		switch tag {
		case tagNull, tagTrue, tagFalse, tagDoubleZero, tagDoubleOne:
			return p + 1, nil
		case tagDoubleByte:
			return r.skip(p, 2)
		case tagDoubleShort:
			return r.skip(p, 3)
		case tagInt, tagLongInt, tagDateMinutes, tagDoubleMill:
			return r.skip(p, 5)
		case tagLong, tagDouble, tagDateMillis:
			return r.skip(p, 9)
		case tagClassDef:
			// A definition is not a value: it precedes the value (an object) that first uses it.
			if p, err = r.classDef(p + 1); err != nil {
				return 0, err
			}
			continue
		case tagObject:
			idx, next, err := r.readCount(p+1, "class definition index")
			if err != nil {
				return 0, err
			}
			return r.skipObject(next, idx, p, depth+1)
		case tagRef:
			r.sawRef = true
			_, next, err := r.readCount(p+1, "reference")
			return next, err
		case tagMapUntyped, tagListVar:
			return r.skipUntilEnd(p+1, depth+1)
		case tagMapTyped, tagListVarType:
			if p, err = r.skipType(p + 1); err != nil {
				return 0, err
			}
			return r.skipUntilEnd(p, depth+1)
		case tagListFixType:
			if p, err = r.skipType(p + 1); err != nil {
				return 0, err
			}
			n, next, err := r.readCount(p, "list length")
			if err != nil {
				return 0, err
			}
			return r.skipValues(next, n, depth+1)
		case tagListFix:
			n, next, err := r.readCount(p+1, "list length")
			if err != nil {
				return 0, err
			}
			return r.skipValues(next, n, depth+1)
		}
		return 0, errAt(p, "unexpected tag 0x%02x", tag)
	}
}

// isScalarTag reports whether the value starting with tag is neither a collection, an object, a class
// definition nor a reference, so dropping it renumbers nothing.
func isScalarTag(tag byte) bool {
	switch {
	case tag <= 0x3f, tag >= 0x80:
		return true
	case tag >= 0x5b && tag <= 0x5f:
		return true
	}
	switch tag {
	case tagBinaryChunk, tagBinaryFinal, tagDouble, tagFalse, tagInt, tagDateMillis, tagDateMinutes, tagLong,
		tagNull, tagStringChunk, tagStringFinal, tagTrue, tagLongInt:
		return true
	}
	return false
}

// appendText appends the natural text form of the scalar value at p to dst (strings as they are, numbers in
// decimal, booleans as true/false, null as nothing, dates in RFC 3339, binary as its bytes). ok is false for
// compound values, which are skipped.
func (r *hreader) appendText(dst []byte, p int, scratch *[]byte) (out []byte, next int, ok bool, err error) {
	if p >= len(r.b) {
		return dst, 0, false, truncated(p)
	}
	b := r.b
	tag := b[p]
	switch {
	case tag <= 0x1f || tag >= 0x30 && tag <= 0x33 || tag == tagStringChunk || tag == tagStringFinal:
		s, next, _, err := r.readString(p, scratch)
		return append(dst, s...), next, true, err
	case tag >= 0x20 && tag <= 0x2f || tag >= 0x34 && tag <= 0x37 || tag == tagBinaryChunk || tag == tagBinaryFinal:
		return r.appendBinary(dst, p)
	case tag >= 0x80 || tag >= 0x38 && tag <= 0x3f || tag == tagInt || tag == tagLongInt || tag == tagLong:
		v, next, err := r.readInt(p)
		return strconv.AppendInt(dst, v, 10), next, true, err
	}
	switch tag {
	case tagNull:
		return dst, p + 1, true, nil
	case tagTrue:
		return append(dst, "true"...), p + 1, true, nil
	case tagFalse:
		return append(dst, "false"...), p + 1, true, nil
	case tagDouble, tagDoubleZero, tagDoubleOne, tagDoubleByte, tagDoubleShort, tagDoubleMill:
		f, next, err := r.readDouble(p)
		return appendJavaDouble(dst, f), next, true, err
	case tagDateMillis:
		if p+9 > len(b) {
			return dst, 0, false, truncated(p)
		}
		ms := int64(binary.BigEndian.Uint64(b[p+1:]))
		return time.UnixMilli(ms).UTC().AppendFormat(dst, "2006-01-02T15:04:05.000Z07:00"), p + 9, true, nil
	case tagDateMinutes:
		if p+5 > len(b) {
			return dst, 0, false, truncated(p)
		}
		min := int64(int32(binary.BigEndian.Uint32(b[p+1:])))
		return time.UnixMilli(min*60000).UTC().AppendFormat(dst, "2006-01-02T15:04:05.000Z07:00"), p + 5, true, nil
	}
	next, err = r.skipValue(p, 0)
	return dst, next, false, err
}

// appendBinary appends the bytes of the binary value at p.
func (r *hreader) appendBinary(dst []byte, p int) ([]byte, int, bool, error) {
	for {
		if p >= len(r.b) {
			return dst, 0, false, truncated(p)
		}
		tag := r.b[p]
		var n, data int
		final := true
		switch {
		case tag >= 0x20 && tag <= 0x2f:
			n, data = int(tag-0x20), p+1
		case tag >= 0x34 && tag <= 0x37:
			if p+2 > len(r.b) {
				return dst, 0, false, truncated(p)
			}
			n, data = int(tag-0x34)<<8|int(r.b[p+1]), p+2
		case tag == tagBinaryChunk || tag == tagBinaryFinal:
			if p+3 > len(r.b) {
				return dst, 0, false, truncated(p)
			}
			n, data, final = int(binary.BigEndian.Uint16(r.b[p+1:])), p+3, tag == tagBinaryFinal
		default:
			return dst, 0, false, errAt(p, "tag 0x%02x where a binary chunk should continue", tag)
		}
		end, err := r.skip(data, n)
		if err != nil {
			return dst, 0, false, err
		}
		dst = append(dst, r.b[data:end]...)
		if final {
			return dst, end, true, nil
		}
		p = end
	}
}

// readDouble reads a double in any of its encodings.
func (r *hreader) readDouble(p int) (float64, int, error) {
	b := r.b
	switch b[p] {
	case tagDoubleZero:
		return 0, p + 1, nil
	case tagDoubleOne:
		return 1, p + 1, nil
	case tagDoubleByte:
		if p+2 > len(b) {
			return 0, 0, truncated(p)
		}
		return float64(int8(b[p+1])), p + 2, nil
	case tagDoubleShort:
		if p+3 > len(b) {
			return 0, 0, truncated(p)
		}
		return float64(int16(binary.BigEndian.Uint16(b[p+1:]))), p + 3, nil
	case tagDoubleMill:
		if p+5 > len(b) {
			return 0, 0, truncated(p)
		}
		return 0.001 * float64(int32(binary.BigEndian.Uint32(b[p+1:]))), p + 5, nil
	default: // tagDouble
		if p+9 > len(b) {
			return 0, 0, truncated(p)
		}
		return math.Float64frombits(binary.BigEndian.Uint64(b[p+1:])), p + 9, nil
	}
}

// appendJavaDouble formats f as Java's Double.toString does, since that is the text a Java client's value
// has on its side: "1.0", "0.5", "1.0E7", "NaN", "Infinity".
func appendJavaDouble(dst []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, "NaN"...)
	case math.IsInf(f, 1):
		return append(dst, "Infinity"...)
	case math.IsInf(f, -1):
		return append(dst, "-Infinity"...)
	}
	if a := math.Abs(f); a == 0 || a >= 1e-3 && a < 1e7 {
		start := len(dst)
		dst = strconv.AppendFloat(dst, f, 'f', -1, 64)
		for _, c := range dst[start:] {
			if c == '.' {
				return dst
			}
		}
		return append(dst, ".0"...)
	}
	// Go writes 1e+07 where Java writes 1.0E7.
	var tmp [32]byte
	s := strconv.AppendFloat(tmp[:0], f, 'e', -1, 64)
	e := 0
	for e < len(s) && s[e] != 'e' {
		e++
	}
	mant, exp := s[:e], s[e+1:]
	dst = append(dst, mant...)
	hasDot := false
	for _, c := range mant {
		hasDot = hasDot || c == '.'
	}
	if !hasDot {
		dst = append(dst, ".0"...)
	}
	dst = append(dst, 'E')
	if exp[0] == '-' {
		dst = append(dst, '-')
	}
	exp = exp[1:]
	for len(exp) > 1 && exp[0] == '0' {
		exp = exp[1:]
	}
	return append(dst, exp...)
}

// appendString appends s as a Hessian 2 string. Lengths count UTF-16 units and characters outside the BMP are
// written as surrogate pairs of 3 bytes each, because Java's Hessian2Input rejects 4-byte UTF-8. Invalid UTF-8
// in s becomes U+FFFD. Strings longer than 32768 units are chunked like Java's Hessian2Output chunks them,
// never splitting a surrogate pair.
func appendString(dst []byte, s string) []byte {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii && len(s) <= chunkUnits {
		return append(appendStringHeader(dst, len(s), true), s...)
	}
	for {
		// Measure the next chunk, then write its header and its characters.
		units, end := 0, 0
		for end < len(s) {
			r, size := utf8.DecodeRuneInString(s[end:])
			w := 1
			if r >= 0x10000 {
				w = 2
			}
			if units+w > chunkUnits {
				break
			}
			units += w
			end += size
		}
		final := end == len(s)
		dst = appendStringHeader(dst, units, final)
		for _, r := range s[:end] {
			if r >= 0x10000 {
				r -= 0x10000
				dst = appendSurrogate(dst, 0xd800+r>>10)
				dst = appendSurrogate(dst, 0xdc00+r&0x3ff)
				continue
			}
			dst = utf8.AppendRune(dst, r)
		}
		if final {
			return dst
		}
		s = s[end:]
	}
}

// appendSurrogate writes a surrogate code unit as 3 bytes, which utf8.AppendRune refuses to do.
func appendSurrogate(dst []byte, u rune) []byte {
	return append(dst, 0xe0|byte(u>>12), 0x80|byte(u>>6)&0x3f, 0x80|byte(u)&0x3f)
}

// appendStringHeader writes the tag and length of a string chunk of units UTF-16 units.
func appendStringHeader(dst []byte, units int, final bool) []byte {
	switch {
	case !final:
		return append(dst, tagStringChunk, byte(units>>8), byte(units))
	case units <= 0x1f:
		return append(dst, byte(units))
	case units <= 0x3ff:
		return append(dst, 0x30+byte(units>>8), byte(units))
	default:
		return append(dst, tagStringFinal, byte(units>>8), byte(units))
	}
}
