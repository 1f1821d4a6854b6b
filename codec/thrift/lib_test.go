package thrift

// Helpers that make and read messages with the Apache Thrift Go library, so the tests check the codec against
// a real peer's bytes rather than against itself.

import (
	"context"
	"encoding/binary"
	"strings"
	"testing"

	athrift "github.com/apache/thrift/lib/go/thrift"
)

// wire is one combination of transport and protocol a Thrift peer may speak.
type wire struct {
	transport string // "framed", "buffered" (unframed) or "header" (Apache THeader)
	proto     string // "binary", "binary-old" (non-strict) or "compact"
	mux       string // the TMultiplexedProtocol service name, if any
}

func (w wire) String() string {
	s := w.transport + "/" + w.proto
	if w.mux != "" {
		s += "/mux"
	}
	return s
}

func (w wire) framed() bool { return w.transport != "buffered" }

// wires is every combination the library can write.
var wires = []wire{
	{transport: "framed", proto: "binary"},
	{transport: "framed", proto: "binary-old"},
	{transport: "framed", proto: "compact"},
	{transport: "buffered", proto: "binary"},
	{transport: "buffered", proto: "binary-old"},
	{transport: "buffered", proto: "compact"},
	{transport: "header", proto: "binary"},
	{transport: "header", proto: "compact"},
	{transport: "framed", proto: "binary", mux: "Calculator"},
	{transport: "buffered", proto: "compact", mux: "Calculator"},
	{transport: "header", proto: "compact", mux: "Calculator"},
}

// stack builds the library's protocol stack over mem for w, as a client or server of that wire would.
func (w wire) stack(mem athrift.TTransport) athrift.TProtocol {
	cfg := &athrift.TConfiguration{TBinaryStrictWrite: athrift.BoolPtr(w.proto != "binary-old")}
	if w.transport == "header" {
		id := athrift.THeaderProtocolBinary
		if w.proto == "compact" {
			id = athrift.THeaderProtocolCompact
		}
		cfg.THeaderProtocolID = &id
		return athrift.NewTHeaderProtocolConf(mem, cfg)
	}
	var tr athrift.TTransport = mem
	switch w.transport {
	case "framed":
		tr = athrift.NewTFramedTransportConf(mem, cfg)
	case "buffered":
		tr = athrift.NewTBufferedTransport(mem, 4096)
	}
	if w.proto == "compact" {
		return athrift.NewTCompactProtocolConf(tr, cfg)
	}
	return athrift.NewTBinaryProtocolConf(tr, cfg)
}

// libMessage writes one message with the library and returns its bytes. headers are THeader key/values.
func libMessage(t testing.TB, w wire, name string, typ athrift.TMessageType, seq int32, body athrift.TStruct,
	headers map[string]string) []byte {
	t.Helper()
	ctx := context.Background()
	mem := athrift.NewTMemoryBuffer()
	p := w.stack(mem)
	if hp, ok := p.(*athrift.THeaderProtocol); ok {
		for k, v := range headers {
			hp.SetWriteHeader(k, v)
		}
	}
	if w.mux != "" {
		p = athrift.NewTMultiplexedProtocol(p, w.mux)
	}
	if err := p.WriteMessageBegin(ctx, name, typ, seq); err != nil {
		t.Fatalf("library WriteMessageBegin: %v", err)
	}
	if err := body.Write(ctx, p); err != nil {
		t.Fatalf("library write body: %v", err)
	}
	if err := p.WriteMessageEnd(ctx); err != nil {
		t.Fatalf("library WriteMessageEnd: %v", err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("library Flush: %v", err)
	}
	return append([]byte(nil), mem.Bytes()...)
}

// libRead is what the library reads back from one message.
type libRead struct {
	name    string
	typ     athrift.TMessageType
	seq     int32
	headers map[string]string
}

// libReadMessage reads one message with the library, skipping its whole body, and requires that nothing is
// left over.
func libReadMessage(t testing.TB, w wire, frame []byte) libRead {
	t.Helper()
	ctx := context.Background()
	mem := athrift.NewTMemoryBuffer()
	mem.Write(frame)
	p := w.stack(mem)
	name, typ, seq, err := p.ReadMessageBegin(ctx)
	if err != nil {
		t.Fatalf("library ReadMessageBegin: %v", err)
	}
	if err := athrift.SkipDefaultDepth(ctx, p, athrift.STRUCT); err != nil {
		t.Fatalf("library skip body of %q: %v", name, err)
	}
	if err := p.ReadMessageEnd(ctx); err != nil {
		t.Fatalf("library ReadMessageEnd: %v", err)
	}
	r := libRead{name: name, typ: typ, seq: seq}
	if hp, ok := p.(*athrift.THeaderProtocol); ok {
		r.headers = map[string]string(hp.GetReadHeaders())
	}
	if left := mem.Len(); left != 0 {
		t.Fatalf("library left %d bytes unread", left)
	}
	return r
}

// libRecv reads a reply as a client's generated code does (TStandardClient.Recv) and returns its error.
func libRecv(t testing.TB, w wire, frame []byte, seq int32, method string) error {
	t.Helper()
	mem := athrift.NewTMemoryBuffer()
	mem.Write(frame)
	p := w.stack(mem)
	client := athrift.NewTStandardClient(p, p)
	return client.Recv(context.Background(), p, seq, method, &richArgs{})
}

// richArgs is a struct with a field of every type, so the skipper meets all of them.
type richArgs struct {
	text string
}

func (a *richArgs) Write(ctx context.Context, p athrift.TProtocol) error {
	w := &fieldWriter{ctx: ctx, p: p}
	w.p.WriteStructBegin(ctx, "args")
	w.field(1, athrift.STRING, func() { p.WriteString(ctx, a.text) })
	w.field(2, athrift.BOOL, func() { p.WriteBool(ctx, true) })
	w.field(3, athrift.BOOL, func() { p.WriteBool(ctx, false) })
	w.field(4, athrift.BYTE, func() { p.WriteByte(ctx, -7) })
	w.field(5, athrift.I16, func() { p.WriteI16(ctx, -300) })
	w.field(6, athrift.I32, func() { p.WriteI32(ctx, 1<<30) })
	w.field(7, athrift.I64, func() { p.WriteI64(ctx, -1<<60) })
	w.field(8, athrift.DOUBLE, func() { p.WriteDouble(ctx, 3.25) })
	w.field(9, athrift.STRING, func() { p.WriteBinary(ctx, []byte{0, 1, 2, 0xff}) })
	w.field(10, athrift.UUID, func() { p.WriteUUID(ctx, athrift.Tuuid{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}) })
	w.field(11, athrift.LIST, func() {
		p.WriteListBegin(ctx, athrift.STRING, 2)
		p.WriteString(ctx, "a")
		p.WriteString(ctx, "bc")
		p.WriteListEnd(ctx)
	})
	w.field(12, athrift.SET, func() {
		p.WriteSetBegin(ctx, athrift.I32, 3)
		for _, v := range []int32{1, -2, 300000} {
			p.WriteI32(ctx, v)
		}
		p.WriteSetEnd(ctx)
	})
	w.field(13, athrift.MAP, func() {
		p.WriteMapBegin(ctx, athrift.STRING, athrift.LIST, 1)
		p.WriteString(ctx, "k")
		p.WriteListBegin(ctx, athrift.I64, 20) // 20 elements: the compact list's long size form
		for i := range 20 {
			p.WriteI64(ctx, int64(i)<<40)
		}
		p.WriteListEnd(ctx)
		p.WriteMapEnd(ctx)
	})
	w.field(14, athrift.STRUCT, func() {
		p.WriteStructBegin(ctx, "inner")
		p.WriteFieldBegin(ctx, "name", athrift.STRING, 1)
		p.WriteString(ctx, "nested")
		p.WriteFieldEnd(ctx)
		p.WriteFieldBegin(ctx, "flags", athrift.MAP, 2)
		p.WriteMapBegin(ctx, athrift.I32, athrift.BOOL, 2)
		p.WriteI32(ctx, 1)
		p.WriteBool(ctx, true)
		p.WriteI32(ctx, 2)
		p.WriteBool(ctx, false)
		p.WriteMapEnd(ctx)
		p.WriteFieldEnd(ctx)
		p.WriteFieldStop(ctx)
		p.WriteStructEnd(ctx)
	})
	w.field(15, athrift.LIST, func() {
		p.WriteListBegin(ctx, athrift.BOOL, 3)
		p.WriteBool(ctx, true)
		p.WriteBool(ctx, false)
		p.WriteBool(ctx, true)
		p.WriteListEnd(ctx)
	})
	w.field(16, athrift.MAP, func() {
		p.WriteMapBegin(ctx, athrift.I16, athrift.DOUBLE, 2)
		p.WriteI16(ctx, 1)
		p.WriteDouble(ctx, 1.5)
		p.WriteI16(ctx, 2)
		p.WriteDouble(ctx, -2.5)
		p.WriteMapEnd(ctx)
	})
	w.field(17, athrift.MAP, func() { // empty map: a single byte in compact
		p.WriteMapBegin(ctx, athrift.STRING, athrift.STRING, 0)
		p.WriteMapEnd(ctx)
	})
	w.field(18, athrift.LIST, func() {
		p.WriteListBegin(ctx, athrift.UUID, 1)
		p.WriteUUID(ctx, athrift.Tuuid{})
		p.WriteListEnd(ctx)
	})
	w.field(300, athrift.BOOL, func() { p.WriteBool(ctx, true) }) // a long-form field header in compact
	w.field(-1, athrift.I32, func() { p.WriteI32(ctx, 5) })       // a negative id (the long form too)
	p.WriteFieldStop(ctx)
	return p.WriteStructEnd(ctx)
}

func (a *richArgs) Read(ctx context.Context, p athrift.TProtocol) error {
	return athrift.SkipDefaultDepth(ctx, p, athrift.STRUCT)
}

type fieldWriter struct {
	ctx context.Context
	p   athrift.TProtocol
}

func (w *fieldWriter) field(id int16, typ athrift.TType, value func()) {
	w.p.WriteFieldBegin(w.ctx, "f", typ, id)
	value()
	w.p.WriteFieldEnd(w.ctx)
}

// result is a reply's result struct: field 0 is success; any other id is a declared exception.
type result struct {
	field int16 // -1: a void success (no field at all)
	text  string
}

func (r *result) Write(ctx context.Context, p athrift.TProtocol) error {
	p.WriteStructBegin(ctx, "result")
	switch {
	case r.field == 0:
		p.WriteFieldBegin(ctx, "success", athrift.STRING, 0)
		p.WriteString(ctx, r.text)
		p.WriteFieldEnd(ctx)
	case r.field > 0:
		p.WriteFieldBegin(ctx, "err", athrift.STRUCT, r.field)
		p.WriteStructBegin(ctx, "MyError")
		p.WriteFieldBegin(ctx, "message", athrift.STRING, 1)
		p.WriteString(ctx, r.text)
		p.WriteFieldEnd(ctx)
		p.WriteFieldStop(ctx)
		p.WriteStructEnd(ctx)
		p.WriteFieldEnd(ctx)
	}
	p.WriteFieldStop(ctx)
	return p.WriteStructEnd(ctx)
}

func (r *result) Read(ctx context.Context, p athrift.TProtocol) error {
	return athrift.SkipDefaultDepth(ctx, p, athrift.STRUCT)
}

// ttHeaderFrame builds a Kitex TTHeader frame by hand around payload (a message without transport), from the
// layout in Kitex's header codec: LENGTH, magic 0x1000, flags, seqid, header size in words; then protocol id
// (uint8), transform count (uint8), info blocks with uint8 ids and uint16 counts and lengths (0x01 string
// key/values, 0x10 integer key/values, 0x11 ACL token), and zero padding to a multiple of 4.
func ttHeaderFrame(seq uint32, flags uint16, strKV [][2]string, intKV map[uint16]string, acl string, payload []byte) []byte {
	var h []byte
	h = append(h, 0, 0) // binary payload, no transforms
	if len(strKV) > 0 {
		h = binary.BigEndian.AppendUint16(append(h, 0x01), uint16(len(strKV)))
		for _, kv := range strKV {
			for _, s := range kv {
				h = binary.BigEndian.AppendUint16(h, uint16(len(s)))
				h = append(h, s...)
			}
		}
	}
	if len(intKV) > 0 {
		h = binary.BigEndian.AppendUint16(append(h, 0x10), uint16(len(intKV)))
		for _, k := range []uint16{3, 9, 100} { // a fixed order, for stable bytes
			if v, ok := intKV[k]; ok {
				h = binary.BigEndian.AppendUint16(h, k)
				h = binary.BigEndian.AppendUint16(h, uint16(len(v)))
				h = append(h, v...)
			}
		}
	}
	if acl != "" {
		h = binary.BigEndian.AppendUint16(append(h, 0x11), uint16(len(acl)))
		h = append(h, acl...)
	}
	for len(h)%4 != 0 {
		h = append(h, 0)
	}
	f := make([]byte, 14, 14+len(h)+len(payload))
	binary.BigEndian.PutUint16(f[4:], 0x1000)
	binary.BigEndian.PutUint16(f[6:], flags)
	binary.BigEndian.PutUint32(f[8:], seq)
	binary.BigEndian.PutUint16(f[12:], uint16(len(h)/4))
	f = append(append(f, h...), payload...)
	binary.BigEndian.PutUint32(f, uint32(len(f)-4))
	return f
}

// payloadOf writes a bare message (no transport) with the library.
func payloadOf(t testing.TB, proto, name string, typ athrift.TMessageType, seq int32, body athrift.TStruct) []byte {
	return libMessage(t, wire{transport: "buffered", proto: proto}, name, typ, seq, body, nil)
}

// bareMethod is the method a multiplexed name carries.
func bareMethod(name string) string {
	if i := strings.IndexByte(name, ':'); i >= 0 {
		return name[i+1:]
	}
	return name
}
