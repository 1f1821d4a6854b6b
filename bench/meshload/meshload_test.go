package meshload

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// startServers runs an echo server and a floor in front of it on loopback, both speaking p, and returns their
// addresses.
func startServers(t *testing.T, p Protocol) (echo, floor string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 2)
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	eln, fln := listen(), listen()
	go func() { errc <- Echo{Protocol: p}.Serve(ctx, eln) }()
	go func() { errc <- Floor{Protocol: p, Upstream: eln.Addr().String()}.Serve(ctx, fln) }()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-errc; err != nil {
				t.Errorf("serve: %v", err)
			}
		}
	})
	return eln.Addr().String(), fln.Addr().String()
}

func TestLoadThroughEchoAndFloor(t *testing.T) {
	for _, p := range Protocols {
		echo, floor := startServers(t, p)
		for _, tc := range []struct {
			name   string
			target string
			conns  int
			in     int
			size   int
			rate   float64
		}{
			{"direct/1x1", echo, 1, 1, 1024, 0},
			{"direct/2x8", echo, 2, 8, 1024, 0},
			{"floor/1x1", floor, 1, 1, 1024, 0},
			{"floor/2x8", floor, 2, 8, 1024, 0},
			{"floor/2x8/64k", floor, 2, 8, 64 << 10, 0},
			{"floor/open", floor, 2, 16, 128, 4000},
		} {
			t.Run(p.Name()+"/"+tc.name, func(t *testing.T) {
				res, err := Run(context.Background(), Config{
					Protocol: p, Target: tc.target, Conns: tc.conns, InFlight: tc.in, Size: tc.size, Rate: tc.rate,
					Duration: 30 * time.Second, Requests: 200,
				})
				if err != nil {
					t.Fatal(err)
				}
				if res.Errors() != 0 || res.FirstError != "" {
					t.Fatalf("errors: %+v", res)
				}
				if res.Requests != 200 || res.Latency.Count() != 200 {
					t.Fatalf("got %d good replies (%d recorded), want 200", res.Requests, res.Latency.Count())
				}
			})
		}
	}
}

// exchange writes frame to c and reads one whole frame of p back.
func exchange(t *testing.T, p Protocol, c net.Conn, frame []byte) []byte {
	t.Helper()
	if frame != nil {
		if _, err := c.Write(frame); err != nil {
			t.Fatal(err)
		}
	}
	var buf []byte
	for {
		n, err := p.FrameLen(buf)
		if err != nil {
			t.Fatalf("reply: %v", err)
		}
		if n > 0 && len(buf) >= n {
			if len(buf) > n {
				t.Fatalf("%d bytes after the reply", len(buf)-n)
			}
			return buf
		}
		want := max(n, len(buf)+1)
		more := make([]byte, want-len(buf))
		if _, err := io.ReadFull(c, more); err != nil {
			t.Fatal(err)
		}
		buf = append(buf, more...)
	}
}

// dial connects to addr for the length of the test.
func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestDubboEcho checks the echoed string itself, byte for byte, through the floor and straight to the server,
// with strings that take every Hessian string form.
func TestDubboEcho(t *testing.T) {
	echo, floor := startServers(t, Dubbo{})
	payloads := []string{"", "x", Payload(31), Payload(32), Payload(1024), Payload(70000),
		strings.Repeat("héllo, 世界 😀 ", 3000)}
	for _, target := range []string{echo, floor} {
		c := dial(t, target)
		for i, p := range payloads {
			call := newDubboCall(p)
			id := uint64(1<<40 + i)
			reply := exchange(t, Dubbo{}, c, call.Append(nil, id))
			hdr, body := reply[:dubboHeaderLen], reply[dubboHeaderLen:]
			if hdr[2] != serialHessian || hdr[3] != dubboStatusOK || frameID(hdr) != id {
				t.Fatalf("%s payload %d: header % x", target, i, hdr)
			}
			got, err := ResponseValue(body)
			if err != nil || got != p {
				t.Fatalf("%s payload %d: got %d chars, err %v", target, i, len(got), err)
			}
			if gid, v, _ := call.Check(reply, nil); gid != id || v != Good {
				t.Fatalf("%s payload %d: Check says id %d, verdict %d", target, i, gid, v)
			}
		}
	}
}

// TestDubboEchoEvents checks that heartbeats are answered and oneway requests are not.
func TestDubboEchoEvents(t *testing.T) {
	echo, _ := startServers(t, Dubbo{})
	c := dial(t, echo)
	oneway := newDubboCall("fire and forget").Append(nil, 7)
	oneway[2] &^= flagTwoWay
	heartbeat := appendHeader(nil, flagRequest|flagTwoWay|flagEvent|serialHessian, 0, 8, 1)
	heartbeat = append(heartbeat, 'N')
	reply := exchange(t, Dubbo{}, c, append(oneway, heartbeat...))
	want := append(appendHeader(nil, flagEvent|serialHessian, dubboStatusOK, 8, 1), 'N')
	if !bytes.Equal(reply, want) {
		t.Fatalf("heartbeat reply % x, want % x", reply, want)
	}
}

// readThrift decodes a framed strict-binary message whose struct holds at most one field of type string or
// i32 plus, for an exception, its type: enough for the echo replies.
func readThrift(t *testing.T, f []byte) (typ byte, name string, seqid uint32, fields map[int16]any) {
	t.Helper()
	b := f[4:]
	if v := binary.BigEndian.Uint32(b); v&0xffff0000 != 0x80010000 {
		t.Fatalf("version word %08x", v)
	}
	typ = b[3]
	n := binary.BigEndian.Uint32(b[4:])
	name = string(b[8 : 8+n])
	b = b[8+n:]
	seqid = binary.BigEndian.Uint32(b)
	b = b[4:]
	fields = map[int16]any{}
	for b[0] != thriftStop {
		ft, id := b[0], int16(binary.BigEndian.Uint16(b[1:]))
		b = b[3:]
		switch ft {
		case thriftTypeString:
			n := binary.BigEndian.Uint32(b)
			fields[id] = string(b[4 : 4+n])
			b = b[4+n:]
		case thriftTypeI32:
			fields[id] = int32(binary.BigEndian.Uint32(b))
			b = b[4:]
		default:
			t.Fatalf("field type %d", ft)
		}
	}
	if len(b) != 1 {
		t.Fatalf("%d bytes after the struct", len(b)-1)
	}
	return typ, name, seqid, fields
}

// TestThriftEcho checks what the Thrift echo server answers, through the floor and straight: the string back
// as the REPLY's field 0 under the request's seqid, nothing for a ONEWAY, an EXCEPTION for arguments it cannot
// echo.
func TestThriftEcho(t *testing.T) {
	echo, floor := startServers(t, Thrift{})
	for _, target := range []string{echo, floor} {
		c := dial(t, target)
		for i, p := range []string{"", "x", Payload(1024), Payload(70000), "héllo, 世界 😀"} {
			call := Thrift{}.NewCall(p)
			id := uint64(0xfffffff0 + i) // a negative i32
			reply := exchange(t, Thrift{}, c, call.Append(nil, id))
			typ, name, seqid, fields := readThrift(t, reply)
			if typ != thriftReply || name != "echo" || seqid != uint32(id) || len(fields) != 1 || fields[0] != p {
				t.Fatalf("%s payload %d: type %d name %q seqid %x fields %d", target, i, typ, name, seqid, len(fields))
			}
			if gid, v, _ := call.Check(reply, nil); gid != id || v != Good {
				t.Fatalf("%s payload %d: Check says id %d, verdict %d", target, i, gid, v)
			}
		}

		oneway := Thrift{}.NewCall("fire and forget").Append(nil, 5)
		oneway[7] = thriftOneway
		bad := Thrift{}.NewCall("").Append(nil, 6)
		bad[thriftArgsAt(t, bad)] = thriftTypeI32 // field 1 claims to be an i32
		reply := exchange(t, Thrift{}, c, append(oneway, bad...))
		typ, _, seqid, fields := readThrift(t, reply)
		if typ != thriftException || seqid != 6 || fields[2] != int32(thriftProtocolError) {
			t.Fatalf("%s: reply to bad arguments: type %d seqid %d fields %v", target, typ, seqid, fields)
		}
		if _, v, _ := (Thrift{}).NewCall("").Check(reply, nil); v != BadStatus {
			t.Fatalf("%s: Check says verdict %d for an EXCEPTION", target, v)
		}
	}
}

// thriftArgsAt returns the offset of the argument struct in a request frame.
func thriftArgsAt(t *testing.T, f []byte) int {
	_, _, bodyAt, ok := thriftHeader(f)
	if !ok {
		t.Fatal("not a thrift message")
	}
	return bodyAt
}

// brpcFrame is a baidu_std frame as the test reads it.
type brpcFrame struct {
	service, method      string
	hasResponse          bool
	errorCode            uint64
	id                   uint64
	attachment           uint64
	message              string // field 1 of the payload
	payloadAndAttachment []byte
}

// readBRPC decodes a baidu_std frame with protowire, independently of the kit's own reader.
func readBRPC(t *testing.T, f []byte) brpcFrame {
	t.Helper()
	if string(f[:4]) != "PRPC" || int(binary.BigEndian.Uint32(f[4:])) != len(f)-12 {
		t.Fatalf("header % x for %d bytes", f[:12], len(f))
	}
	metaLen := binary.BigEndian.Uint32(f[8:])
	meta, rest := f[12:12+metaLen], f[12+metaLen:]
	var r brpcFrame
	fields := func(b []byte, each func(protowire.Number, protowire.Type, []byte)) {
		for len(b) > 0 {
			num, typ, n := protowire.ConsumeTag(b)
			m := protowire.ConsumeFieldValue(num, typ, b[n:])
			if n < 0 || m < 0 {
				t.Fatalf("bad protobuf % x", b)
			}
			each(num, typ, b[n:n+m])
			b = b[n+m:]
		}
	}
	str := func(v []byte) string { s, _ := protowire.ConsumeBytes(v); return string(s) }
	num := func(v []byte) uint64 { x, _ := protowire.ConsumeVarint(v); return x }
	fields(meta, func(n protowire.Number, _ protowire.Type, v []byte) {
		switch n {
		case 1:
			sub, _ := protowire.ConsumeBytes(v)
			fields(sub, func(n protowire.Number, _ protowire.Type, v []byte) {
				switch n {
				case 1:
					r.service = str(v)
				case 2:
					r.method = str(v)
				}
			})
		case 2:
			r.hasResponse = true
			sub, _ := protowire.ConsumeBytes(v)
			fields(sub, func(n protowire.Number, _ protowire.Type, v []byte) {
				if n == 1 {
					r.errorCode = num(v)
				}
			})
		case 4:
			r.id = num(v)
		case 5:
			r.attachment = num(v)
		}
	})
	r.payloadAndAttachment = rest
	payload := rest[:len(rest)-int(r.attachment)]
	fields(payload, func(n protowire.Number, _ protowire.Type, v []byte) {
		if n == 1 {
			r.message = str(v)
		}
	})
	return r
}

// TestBRPCEcho checks the bRPC requests the load sends and what the echo server answers, through the floor
// and straight: the payload back under the request's correlation_id with error_code 0, the attachment too,
// and an answer to a pbrpc-style request that carries an empty response meta.
func TestBRPCEcho(t *testing.T) {
	echo, floor := startServers(t, BRPC{})
	for _, target := range []string{echo, floor} {
		c := dial(t, target)
		for i, p := range []string{"", "x", Payload(1024), Payload(70000), "héllo, 世界 😀"} {
			call := BRPC{}.NewCall(p)
			id := uint64(1)<<(7*i) + uint64(i) // varints of 1 to 5 bytes
			req := call.Append(nil, id)
			if r := readBRPC(t, req); r.service != brpcService || r.method != brpcMethod || r.id != id ||
				r.hasResponse || r.message != p {
				t.Fatalf("request %d: %+v", i, r)
			}
			reply := exchange(t, BRPC{}, c, req)
			r := readBRPC(t, reply)
			if !r.hasResponse || r.errorCode != 0 || r.id != id || r.message != p || r.service != "" {
				t.Fatalf("%s payload %d: reply %+v", target, i, r)
			}
			if gid, v, _ := call.Check(reply, nil); gid != id || v != Good {
				t.Fatalf("%s payload %d: Check says id %d, verdict %d", target, i, gid, v)
			}
		}

		// A request as pbrpc writes it: an empty response meta besides the request meta, and an attachment.
		meta := protowire.AppendTag(nil, 1, protowire.BytesType)
		meta = protowire.AppendString(meta, "\x0a\x03svc\x12\x01m")
		meta = append(meta, 0x12, 0x00)
		meta = protowire.AppendTag(meta, 4, protowire.VarintType)
		meta = protowire.AppendVarint(meta, 99)
		meta = protowire.AppendTag(meta, 5, protowire.VarintType)
		meta = protowire.AppendVarint(meta, 3)
		body := append(protowire.AppendString([]byte{0x0a}, "hi"), "att"...)
		req := appendBRPCHeader(nil, len(meta), len(body))
		req = append(append(req, meta...), body...)
		r := readBRPC(t, exchange(t, BRPC{}, c, req))
		if !r.hasResponse || r.id != 99 || r.attachment != 3 || string(r.payloadAndAttachment) != string(body) {
			t.Fatalf("%s: reply to a pbrpc request %+v", target, r)
		}
	}
}

// TestCheckVerdicts checks that the load generator tells failed and wrong replies from good ones, for every
// protocol: a reply that reports a failure, a reply with another string, a frame that is no reply.
func TestCheckVerdicts(t *testing.T) {
	const id = 0x12345
	thriftExc := appendThriftHeader(nil, thriftException, []byte("echo"), []byte{0, 1, 0x23, 0x45})
	thriftExc = append(appendThriftString(thriftExc, 1, []byte("no route")), thriftStop)
	patchFrameLen(thriftExc)
	brpcErr := protowire.AppendTag(nil, 2, protowire.BytesType)
	brpcErr = protowire.AppendBytes(brpcErr, []byte{0x08, 0xe9, 0x07}) // error_code 1001
	brpcErr = protowire.AppendVarint(protowire.AppendTag(brpcErr, 4, protowire.VarintType), id)
	brpcErr = append(appendBRPCHeader(nil, len(brpcErr), 0), brpcErr...)
	dubboErr := appendHeader(nil, serialHessian, statusBadRequest, id, 1)
	dubboErr = append(dubboErr, 'N')

	for _, tc := range []struct {
		p      Protocol
		failed []byte
	}{{Dubbo{}, dubboErr}, {Thrift{}, thriftExc}, {BRPC{}, brpcErr}} {
		t.Run(tc.p.Name(), func(t *testing.T) {
			call := tc.p.NewCall("ping")
			good := tc.p.AppendEcho(nil, call.Append(nil, id))
			wrong := tc.p.AppendEcho(nil, tc.p.NewCall("pong").Append(nil, id))
			for _, c := range []struct {
				name  string
				frame []byte
				v     Verdict
			}{{"good", good, Good}, {"failed", tc.failed, BadStatus}, {"wrong string", wrong, BadBody}} {
				if n, err := tc.p.FrameLen(c.frame); err != nil || n != len(c.frame) {
					t.Fatalf("%s: FrameLen %d, %v for %d bytes", c.name, n, err, len(c.frame))
				}
				if gid, v, _ := call.Check(c.frame, nil); gid != id || v != c.v {
					t.Errorf("%s: id %x verdict %d, want id %x verdict %d", c.name, gid, v, id, c.v)
				}
			}
			// A request is not a reply: the echo server answers it, the load generator must not count it.
			if gid, v, _ := call.Check(call.Append(nil, id), nil); v == Good {
				t.Errorf("a request passed as a good reply (id %x)", gid)
			}
		})
	}
}

// TestIDs checks that the ids a connection stamps fit the protocol's id and are never 0, across a wrap of the
// send counter, and that they keep naming their slot.
func TestIDs(t *testing.T) {
	for _, p := range Protocols {
		w := &worker{call: p.NewCall(""), idMask: ^uint64(0) >> (64 - p.IDBits())}
		w.seq = w.idMask>>slotBits - 2 // three sends before the counter wraps within the id
		for range 6 {
			id := w.stamp(0)
			if id == 0 || id&^w.idMask != 0 || slotOf(id, 1) != 0 {
				t.Fatalf("%s: id %x (mask %x)", p.Name(), id, w.idMask)
			}
			w.out = w.out[:0]
		}
	}
}

func TestHistogram(t *testing.T) {
	h := NewHistogram()
	for v := 1; v <= 100000; v++ {
		h.Record(time.Duration(v) * time.Microsecond)
	}
	for _, q := range []float64{0.5, 0.99, 0.999} {
		want := q * 100000 * float64(time.Microsecond)
		got := float64(h.Quantile(q))
		if got < want || got > want*1.01 {
			t.Errorf("q%v = %v, want %v within 1%%", q, time.Duration(got), time.Duration(want))
		}
	}
	if h.Quantile(1) != 100*time.Millisecond || h.Count() != 100000 {
		t.Errorf("max %v count %d", h.Quantile(1), h.Count())
	}
	for v := uint64(0); v < 1<<20; v += 7 {
		if i := bucketOf(v); bucketHigh(i) < v || (i > 0 && bucketHigh(i-1) >= v) {
			t.Fatalf("value %d: bucket %d holds up to %d", v, i, bucketHigh(i))
		}
	}
}

// BenchmarkRoundTrip measures a request of each protocol through its echo server, directly and through the
// floor, in one process; allocs/op shows that neither the load generator nor the servers allocate per
// request.
func BenchmarkRoundTrip(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, p := range Protocols {
		eln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		fln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go Echo{Protocol: p}.Serve(ctx, eln)
		go Floor{Protocol: p, Upstream: eln.Addr().String()}.Serve(ctx, fln)
		for _, bc := range []struct {
			name   string
			target string
			conns  int
			in     int
		}{
			{"direct/1x1", eln.Addr().String(), 1, 1},
			{"direct/4x16", eln.Addr().String(), 4, 16},
			{"floor/1x1", fln.Addr().String(), 1, 1},
			{"floor/4x16", fln.Addr().String(), 4, 16},
		} {
			b.Run(p.Name()+"/"+bc.name, func(b *testing.B) {
				b.ReportAllocs()
				res, err := Run(context.Background(), Config{Protocol: p, Target: bc.target, Conns: bc.conns,
					InFlight: bc.in, Size: 1024, Duration: time.Hour, Requests: b.N})
				if err != nil {
					b.Fatal(err)
				}
				if res.Errors() != 0 {
					b.Fatalf("%d errors", res.Errors())
				}
				b.ReportMetric(float64(res.Latency.Quantile(0.5))/1e3, "p50-µs")
			})
		}
	}
}
