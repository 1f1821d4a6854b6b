package codectest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/meltemi-mesh/meltemi/codec"
)

// sniffLen is the most bytes a Sniffer may need before it answers Mine or NotMine.
const sniffLen = 16

func sniffName(r codec.SniffResult) string {
	switch r {
	case codec.NotMine:
		return "NotMine"
	case codec.Mine:
		return "Mine"
	case codec.NeedMore:
		return "NeedMore"
	}
	return fmt.Sprintf("SniffResult(%d)", r)
}

func (k *kit) checkSniff(t tester) {
	sn, ok := k.factory.(codec.Sniffer)
	if !ok {
		if len(k.s.SniffMine) > 0 {
			t.Fatalf("the suite lists SniffMine samples, but the factory does not implement codec.Sniffer")
		}
		t.Skipf("the factory does not implement codec.Sniffer")
	}
	// Only what a client sends first is sniffed: requests, not replies.
	var mine []Sample
	for _, smp := range k.s.Samples {
		if !smp.Type.IsReply() {
			mine = append(mine, smp)
		}
	}
	mine = append(mine, k.s.SniffMine...)
	for _, group := range []struct {
		name    string
		samples []Sample
		check   func(tester, codec.Sniffer, Sample)
	}{{"mine", mine, sniffMine}, {"foreign", k.s.Foreign, sniffForeign}} {
		if len(group.samples) == 0 {
			continue
		}
		t.run(group.name, func(t tester) {
			for _, smp := range group.samples {
				t.run(smp.Name, func(t tester) {
					defer recoverTo(t, smp.Name)
					group.check(t, sn, smp)
				})
			}
		})
	}
}

// sniffMine checks that the protocol's own first bytes are never NotMine, and Mine once there are enough.
func sniffMine(t tester, sn codec.Sniffer, smp Sample) {
	t.Helper()
	data := clone(smp.Frame)
	prev := codec.NeedMore
	for n := 0; n <= min(len(data), sniffLen); n++ {
		var r codec.SniffResult
		guardFatal(t, fmt.Sprintf("Sniff of the first %d bytes", n), func() { r = sn.Sniff(data[:n:n]) })
		switch {
		case r == codec.NotMine:
			t.Errorf("Sniff of the first %d bytes (%s) = NotMine; the protocol's own bytes must give NeedMore or Mine", n, hexPrefix(data[:n]))
			return
		case r != codec.Mine && r != codec.NeedMore:
			t.Errorf("Sniff of the first %d bytes = %s", n, sniffName(r))
			return
		case prev == codec.Mine && r == codec.NeedMore:
			t.Errorf("Sniff of %d bytes = Mine, but of %d bytes = NeedMore; more bytes cannot make it less sure", n-1, n)
			return
		}
		prev = r
	}
	if len(data) >= sniffLen && prev != codec.Mine {
		t.Errorf("Sniff of the first %d bytes = %s; a Sniffer must answer Mine or NotMine by then", sniffLen, sniffName(prev))
	}
	var whole codec.SniffResult
	guardFatal(t, "Sniff of the whole frame", func() { whole = sn.Sniff(data) })
	if whole != codec.Mine && (len(data) >= sniffLen || whole == codec.NotMine) {
		t.Errorf("Sniff of the whole %d-byte frame = %s; want Mine", len(data), sniffName(whole))
	}
	if !bytes.Equal(data, smp.Frame) {
		t.Errorf("Sniff changed the bytes it was given, at offsets %s", diffOffsets(data, smp.Frame))
	}
	if allocs := testing.AllocsPerRun(20, func() { sn.Sniff(data) }); allocs != 0 {
		t.Errorf("Sniff allocates %.1f times per call; it must be a few byte comparisons", allocs)
	}
}

// sniffForeign checks that another protocol's bytes are never Mine, and NotMine once there are enough.
func sniffForeign(t tester, sn codec.Sniffer, smp Sample) {
	t.Helper()
	data := clone(smp.Frame)
	for n := 1; n <= min(len(data), sniffLen); n++ {
		var r codec.SniffResult
		guardFatal(t, fmt.Sprintf("Sniff of the first %d bytes", n), func() { r = sn.Sniff(data[:n:n]) })
		if r == codec.Mine {
			t.Errorf("Sniff of the first %d bytes of %s (%s) = Mine; another protocol's bytes must give NotMine or NeedMore",
				n, smp.Name, hexPrefix(data[:n]))
			return
		}
	}
	var r codec.SniffResult
	guardFatal(t, "Sniff of the whole sample", func() { r = sn.Sniff(data) })
	if r != codec.NotMine && !(r == codec.NeedMore && len(data) < sniffLen) {
		t.Errorf("Sniff of %s (%d bytes) = %s; want NotMine", smp.Name, len(data), sniffName(r))
	}
}

// Preambles returns the first bytes clients of well-known protocols send, for Suite.Foreign. A preamble is
// left out when its name, or the part of its name before a dash, is among except: Preambles("thrift") leaves
// out every Thrift transport.
func Preambles(except ...string) []Sample {
	var out []Sample
	for _, p := range preambles() {
		proto, _, _ := strings.Cut(p.Name, "-")
		skip := false
		for _, e := range except {
			if e == p.Name || e == proto {
				skip = true
			}
		}
		if !skip {
			out = append(out, p)
		}
	}
	return out
}

// preambles builds each protocol's opening by hand from its specification; only the first bytes matter.
func preambles() []Sample {
	be32 := func(v int) []byte { return binary.BigEndian.AppendUint32(nil, uint32(v)) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

	// Thrift binary, strict: CALL "ping", seqid 1, an empty argument struct.
	thriftBinary := cat([]byte{0x80, 0x01, 0x00, 0x01}, be32(4), []byte("ping"), be32(1), []byte{0x00})
	// THeader: length, magic 0x0fff, flags, seqid, header size in words, then protocol binary, no
	// transforms, padding, and the binary message.
	theaderBody := cat([]byte{0x0f, 0xff, 0x00, 0x00}, be32(1), []byte{0x00, 0x01}, []byte{0x00, 0x00, 0x00, 0x00}, thriftBinary)
	// bRPC baidu_std: "PRPC", body size, meta size, and an RpcMeta holding a request for S.m with
	// correlation id 1.
	brpcMeta := []byte{0x0a, 0x06, 0x0a, 0x01, 'S', 0x12, 0x01, 'm', 0x20, 0x01}
	// tRPC: magic 0x0930, unary, total size, header size, request id 1, and a RequestProtocol with
	// request_id 1 and func "/p.S/M".
	trpcHeader := []byte{0x18, 0x01, 0x3a, 0x06, '/', 'p', '.', 'S', '/', 'M'}
	// Dubbo: a two-way Hessian 2 request for svc.m with no arguments and an empty attachment map.
	dubboBody := []byte{0x05, '2', '.', '0', '.', '2', 0x03, 's', 'v', 'c', 0x00, 0x01, 'm', 0x00, 'H', 'Z'}

	return []Sample{
		{Name: "http1", Frame: []byte("GET / HTTP/1.1\r\nHost: meltemi\r\n\r\n")},
		{Name: "http2", Frame: []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")},
		{Name: "tls", Frame: cat([]byte{0x16, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x2b, 0x03, 0x03}, bytes.Repeat([]byte{0x42}, 32))},
		{Name: "redis", Frame: []byte("*1\r\n$4\r\nPING\r\n")},
		{Name: "dubbo", Frame: cat([]byte{0xda, 0xbb, 0xc2, 0x00}, make([]byte, 7), []byte{0x01}, be32(len(dubboBody)), dubboBody)},
		{Name: "thrift-binary", Frame: thriftBinary},
		{Name: "thrift-framed", Frame: cat(be32(len(thriftBinary)), thriftBinary)},
		{Name: "thrift-compact", Frame: []byte{0x82, 0x21, 0x01, 0x04, 'p', 'i', 'n', 'g', 0x00}},
		{Name: "thrift-header", Frame: cat(be32(len(theaderBody)), theaderBody)},
		{Name: "brpc", Frame: cat([]byte("PRPC"), be32(len(brpcMeta)), be32(len(brpcMeta)), brpcMeta)},
		{Name: "trpc", Frame: cat([]byte{0x09, 0x30, 0x00, 0x00}, be32(16+len(trpcHeader)), []byte{0x00, byte(len(trpcHeader))}, be32(1), []byte{0x00, 0x00}, trpcHeader)},
	}
}
