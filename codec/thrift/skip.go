package thrift

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Binary protocol field types.
const (
	tStop   = 0
	tBool   = 2
	tI8     = 3
	tDouble = 4
	tI16    = 6
	tI32    = 8
	tI64    = 10
	tString = 11
	tStruct = 12
	tMap    = 13
	tSet    = 14
	tList   = 15
	tUUID   = 16
)

// Compact protocol field types.
const (
	cBoolTrue  = 1
	cBoolFalse = 2
	cI8        = 3
	cI16       = 4
	cI32       = 5
	cI64       = 6
	cDouble    = 7
	cBinary    = 8
	cList      = 9
	cSet       = 10
	cMap       = 11
	cStruct    = 12
	cUUID      = 13
)

// maxDepth bounds the nesting of structs and containers the skipper follows, as the Apache libraries bound
// their own recursion (64), so a peer cannot exhaust the stack with a deep value.
const maxDepth = 64

// maxVarintLen is the longest varint the compact protocol allows (an i64).
const maxVarintLen = 10

// errShort says the bytes end before the value does. For an unframed message it means "wait for more"; inside
// a frame it means the frame is malformed.
var errShort = errors.New("thrift: value runs past the end of the data")

// skipBinary returns the offset just after the binary-protocol value of type typ that starts at p.
func skipBinary(b []byte, p int, typ byte, depth int) (int, error) {
	switch typ {
	case tBool, tI8:
		return need(b, p, 1)
	case tI16:
		return need(b, p, 2)
	case tI32:
		return need(b, p, 4)
	case tDouble, tI64:
		return need(b, p, 8)
	case tUUID:
		return need(b, p, 16)
	case tString:
		n, p, err := binarySize(b, p)
		if err != nil {
			return 0, err
		}
		return need(b, p, n)
	case tStruct:
		return skipBinaryStruct(b, p, depth)
	case tMap:
		if depth >= maxDepth {
			return 0, depthError(p)
		}
		if len(b)-p < 2 {
			return 0, errShort
		}
		kt, vt := b[p], b[p+1]
		n, p, err := binarySize(b, p+2)
		if err != nil || n == 0 {
			return p, err
		}
		if ks, vs := binaryFixedSize(kt), binaryFixedSize(vt); ks > 0 && vs > 0 {
			return needN(b, p, n, ks+vs)
		}
		if _, err := needN(b, p, n, 2); err != nil {
			return 0, err // every entry takes two bytes at least
		}
		for range n {
			if p, err = skipBinary(b, p, kt, depth+1); err != nil {
				return 0, err
			}
			if p, err = skipBinary(b, p, vt, depth+1); err != nil {
				return 0, err
			}
		}
		return p, nil
	case tSet, tList:
		if depth >= maxDepth {
			return 0, depthError(p)
		}
		if len(b)-p < 1 {
			return 0, errShort
		}
		et := b[p]
		n, p, err := binarySize(b, p+1)
		if err != nil || n == 0 {
			return p, err
		}
		if es := binaryFixedSize(et); es > 0 {
			return needN(b, p, n, es)
		}
		if _, err := needN(b, p, n, 1); err != nil {
			return 0, err // every element takes a byte at least
		}
		for range n {
			if p, err = skipBinary(b, p, et, depth+1); err != nil {
				return 0, err
			}
		}
		return p, nil
	}
	return 0, fmt.Errorf("thrift: unknown binary type %d at offset %d", typ, p)
}

// skipBinaryStruct returns the offset just after the binary-protocol struct that starts at p.
func skipBinaryStruct(b []byte, p int, depth int) (int, error) {
	if depth >= maxDepth {
		return 0, depthError(p)
	}
	for {
		if p >= len(b) {
			return 0, errShort
		}
		ft := b[p]
		if ft == tStop {
			return p + 1, nil
		}
		if len(b)-p < 3 {
			return 0, errShort
		}
		var err error
		if p, err = skipBinary(b, p+3, ft, depth+1); err != nil {
			return 0, err
		}
	}
}

// binaryFixedSize is the encoded size of a binary-protocol value of a fixed-size type, else 0.
func binaryFixedSize(typ byte) int {
	switch typ {
	case tBool, tI8:
		return 1
	case tI16:
		return 2
	case tI32:
		return 4
	case tDouble, tI64:
		return 8
	case tUUID:
		return 16
	}
	return 0
}

// binarySize reads an int32 size or element count at p, which must not be negative.
func binarySize(b []byte, p int) (int, int, error) {
	if len(b)-p < 4 {
		return 0, 0, errShort
	}
	n := int32(binary.BigEndian.Uint32(b[p:]))
	if n < 0 {
		return 0, 0, fmt.Errorf("thrift: negative size %d at offset %d", n, p)
	}
	return int(n), p + 4, nil
}

// skipCompact returns the offset just after the compact-protocol value of type typ that starts at p.
func skipCompact(b []byte, p int, typ byte, depth int) (int, error) {
	switch typ {
	case cBoolTrue, cBoolFalse, cI8:
		// Outside a field header (in a collection) a bool takes one byte.
		return need(b, p, 1)
	case cI16, cI32, cI64:
		_, p, err := uvarint(b, p)
		return p, err
	case cDouble:
		return need(b, p, 8)
	case cUUID:
		return need(b, p, 16)
	case cBinary:
		n, p, err := compactSize(b, p)
		if err != nil {
			return 0, err
		}
		return need(b, p, n)
	case cStruct:
		return skipCompactStruct(b, p, depth)
	case cMap:
		if depth >= maxDepth {
			return 0, depthError(p)
		}
		n, p, err := compactSize(b, p)
		if err != nil || n == 0 {
			// An empty map is the single byte 0, with no key and value types.
			return p, err
		}
		if p >= len(b) {
			return 0, errShort
		}
		kt, vt := b[p]>>4, b[p]&0x0f
		p++
		if ks, vs := compactFixedSize(kt), compactFixedSize(vt); ks > 0 && vs > 0 {
			return needN(b, p, n, ks+vs)
		}
		if _, err := needN(b, p, n, 2); err != nil {
			return 0, err
		}
		for range n {
			if p, err = skipCompact(b, p, kt, depth+1); err != nil {
				return 0, err
			}
			if p, err = skipCompact(b, p, vt, depth+1); err != nil {
				return 0, err
			}
		}
		return p, nil
	case cList, cSet:
		if depth >= maxDepth {
			return 0, depthError(p)
		}
		if p >= len(b) {
			return 0, errShort
		}
		n, et := int(b[p]>>4), b[p]&0x0f
		p++
		if n == 15 {
			var err error
			if n, p, err = compactSize(b, p); err != nil {
				return 0, err
			}
		}
		if n == 0 {
			return p, nil
		}
		if es := compactFixedSize(et); es > 0 {
			return needN(b, p, n, es)
		}
		if _, err := needN(b, p, n, 1); err != nil {
			return 0, err
		}
		var err error
		for range n {
			if p, err = skipCompact(b, p, et, depth+1); err != nil {
				return 0, err
			}
		}
		return p, nil
	}
	return 0, fmt.Errorf("thrift: unknown compact type %d at offset %d", typ, p)
}

// skipCompactStruct returns the offset just after the compact-protocol struct that starts at p.
func skipCompactStruct(b []byte, p int, depth int) (int, error) {
	if depth >= maxDepth {
		return 0, depthError(p)
	}
	for {
		if p >= len(b) {
			return 0, errShort
		}
		h := b[p]
		p++
		if h&0x0f == tStop {
			// The Apache readers take any header with type 0 as the stop, whatever its high bits.
			return p, nil
		}
		var err error
		if h>>4 == 0 {
			// Long form: the field id follows as a zig-zag varint.
			if _, p, err = uvarint(b, p); err != nil {
				return 0, err
			}
		}
		ft := h & 0x0f
		if ft == cBoolTrue || ft == cBoolFalse {
			// The field header carries a bool's value.
			continue
		}
		if p, err = skipCompact(b, p, ft, depth+1); err != nil {
			return 0, err
		}
	}
}

// compactFixedSize is the encoded size of a compact-protocol collection element of a fixed-size type, else 0.
func compactFixedSize(typ byte) int {
	switch typ {
	case cBoolTrue, cBoolFalse, cI8:
		return 1
	case cDouble:
		return 8
	case cUUID:
		return 16
	}
	return 0
}

// compactSize reads a varint size or element count at p. Like the Apache Go and C++ readers it keeps the low
// 32 bits of the varint as an int32, which must not be negative, so that it finds the end they find.
func compactSize(b []byte, p int) (int, int, error) {
	v, next, err := uvarint(b, p)
	if err != nil {
		return 0, 0, err
	}
	n := int32(uint32(v))
	if n < 0 {
		return 0, 0, fmt.Errorf("thrift: negative size %d at offset %d", n, p)
	}
	return int(n), next, nil
}

// uvarint reads an unsigned LEB128 varint at p. Like the Apache readers it accepts redundant continuation
// bytes (SetID pads seqids with them), up to the ten bytes of an i64.
func uvarint(b []byte, p int) (uint64, int, error) {
	var v uint64
	for i := 0; i < maxVarintLen; i++ {
		if p+i >= len(b) {
			return 0, 0, errShort
		}
		c := b[p+i]
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return v, p + i + 1, nil
		}
	}
	return 0, 0, fmt.Errorf("thrift: varint at offset %d is longer than %d bytes", p, maxVarintLen)
}

// need returns p+n when b holds n bytes from p.
func need(b []byte, p, n int) (int, error) {
	if n > len(b)-p {
		return 0, errShort
	}
	return p + n, nil
}

// needN returns the end of count elements of size bytes from p, without overflowing.
func needN(b []byte, p, count, size int) (int, error) {
	left := len(b) - p
	if count > left/size {
		return 0, errShort
	}
	return p + count*size, nil
}

func depthError(p int) error {
	return fmt.Errorf("thrift: value at offset %d nests deeper than %d", p, maxDepth)
}
