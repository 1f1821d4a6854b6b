// Package dubbo is the codec of Dubbo 2's "dubbo" TCP protocol: a 16-byte header and a body, usually
// serialized with Hessian 2.
//
// Decoding reads the header and, for Hessian 2 requests, the strings before the arguments (Dubbo version,
// service path, service version, method, parameter-types descriptor), and for Hessian 2 responses the response
// type; arguments, values and attachment maps are left in the frame, and a map is decoded only when a lookup
// asks for a key that is not there yet. Encoding rewrites the attachment map of a request or a response alone
// and copies every other byte.
package dubbo

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/meltemi-mesh/meltemi/codec"
)

// Header layout and flag bits, as Apache Dubbo's ExchangeCodec writes them.
const (
	headerLen = 16
	magicHigh = 0xda
	magicLow  = 0xbb

	flagRequest = 0x80
	flagTwoWay  = 0x40
	flagEvent   = 0x20
	serialMask  = 0x1f

	serialHessian2 = 2
)

// Response statuses (org.apache.dubbo.remoting.exchange.Response).
const (
	StatusOK                  = 20  // StatusOK is a successful call (the provider may still have thrown)
	StatusClientTimeout       = 30  // StatusClientTimeout is a timeout seen by the consumer
	StatusServerTimeout       = 31  // StatusServerTimeout is a timeout seen by the provider
	StatusBadRequest          = 40  // StatusBadRequest is a request the provider could not read
	StatusBadResponse         = 50  // StatusBadResponse is a response the provider could not write
	StatusServiceNotFound     = 60  // StatusServiceNotFound is a service the provider does not export
	StatusServiceError        = 70  // StatusServiceError is a failure inside the service
	StatusServerError         = 80  // StatusServerError is a failure of the provider
	StatusClientError         = 90  // StatusClientError is a failure of the consumer
	StatusThreadpoolExhausted = 100 // StatusThreadpoolExhausted is a provider out of worker threads
)

// Response types: the int that starts the Hessian 2 body of a response with status OK
// (org.apache.dubbo.rpc.protocol.dubbo.DubboCodec). The last three say that attachments follow.
const (
	responseWithException       = 0
	responseValue               = 1
	responseNullValue           = 2
	responseWithExceptionAttach = 3
	responseValueAttach         = 4
	responseNullValueAttach     = 5

	// withAttachments turns a response type into the same type with attachments.
	withAttachments = responseWithExceptionAttach - responseWithException
)

// dubboVersionKey is the attachment a server puts in every attachment map it writes on a response: the Dubbo
// protocol version it speaks. dubbo-go writes a response's attachments only when the map holds it, so a map
// the codec creates starts with it too.
const (
	dubboVersionKey = "dubbo"
	protocolVersion = "2.0.2"
)

// Metadata keys the codec sets eagerly. Attachments keep their own names.
const (
	// KeyInterface is the service path, the second string of a request body.
	KeyInterface = "interface"
	// KeyMethod is the method name.
	KeyMethod = "method"
	// KeyVersion is the service version, set when it is not empty.
	KeyVersion = "version"
	// KeyEvent marks a Dubbo event that is not answered: "heartbeat" for a oneway heartbeat, "readonly" for
	// the notice a provider sends before it shuts down, "other" for any other event payload.
	KeyEvent = "event"
)

// The codec's bookkeeping in Message.Private.
const (
	privState    = 0 // serialization id, state bits, argument count
	privArgs     = 1 // offset in Frame of the first argument
	privMapStart = 2 // offset in Frame of the attachment map (len(Frame) when there is none), once located
	privMapEnd   = 3 // offset in Frame just after the attachment map, once located
)

// Bits of Private[privState] above the 5-bit serialization id.
const (
	stHessianRequest = 1 << 5 // a Hessian 2 request whose head is decoded; privArgs is set
	stBadDescriptor  = 1 << 6 // the parameter-types descriptor could not be parsed
	stLocated        = 1 << 7 // privMapStart and privMapEnd are set
	stArgsClassDefs  = 1 << 8 // the values before the map define classes, which values in the map may use
	stMapRenumbers   = 1 << 9 // the map holds references, type references or class definitions

	stMapShift = 10 // two bits: how the attachment map is encoded
	stMapMask  = 3 << stMapShift

	// stHessianResponse is a Hessian 2 response with status OK whose type is read; privArgs is where its
	// value (or exception) starts.
	stHessianResponse = 1 << 12
	// stOldClient is a request whose Dubbo protocol version predates response attachments: its client cannot
	// read a response type above 2.
	stOldClient = 1 << 13

	stTypeShift = 14 // three bits: the response type
	stTypeMask  = 7 << stTypeShift

	stArgShift = 20 // the number of values before the map: a request's arguments, a response's value
)

// How a request carries its attachments.
const (
	mapAbsent  = 0 // the body ends after the arguments (very old clients)
	mapNull    = 1
	mapUntyped = 2
	mapTyped   = 3
)

// maxErrorDetail bounds the detail an error reply carries, so a reply stays far below any payload limit.
const maxErrorDetail = 64 << 10

// maxInternedValue is the longest attachment value interned. Short values (timeouts, groups, versions) repeat
// on every request; long ones (trace contexts) rarely do and would only fill the interner.
const maxInternedValue = 64

// Codec reads and writes the Dubbo frames of one connection. It is not safe for concurrent use.
type Codec struct {
	maxBody int

	names  codec.Interner // interface, method and version names
	keys   codec.Interner // attachment keys
	values codec.Interner // short attachment values

	r       hreader
	scratch []byte // strings that need rewriting (chunked or surrogate pairs)
	keyBuf  []byte
	valBuf  []byte
	written []bool // which Mutation.Set entries Encode has written
}

// loader is the Codec seen as the codec.Loader of its messages' attachments; a conversion, not an allocation.
type loader Codec

var (
	_ codec.Codec        = (*Codec)(nil)
	_ codec.ReplyEncoder = (*Codec)(nil)
	_ codec.Loader       = (*loader)(nil)
)

// Decode decodes the first frame in buf into msg.
func (c *Codec) Decode(buf []byte, msg *codec.Message) (int, error) {
	if len(buf) > 0 && buf[0] != magicHigh || len(buf) > 1 && buf[1] != magicLow {
		var second byte
		if len(buf) > 1 {
			second = buf[1]
		}
		return 0, codec.Errorf(false, "dubbo: bad magic 0x%02x%02x, want 0xdabb", buf[0], second)
	}
	if len(buf) < headerLen {
		return 0, codec.ErrIncomplete
	}
	flag, status := buf[2], buf[3]
	id := binary.BigEndian.Uint64(buf[4:12])
	bodyLen := binary.BigEndian.Uint32(buf[12:16])
	ser := flag & serialMask
	isRequest := flag&flagRequest != 0
	twoWay := flag&flagTwoWay != 0
	event := flag&flagEvent != 0

	if int64(bodyLen) > int64(c.maxBody) {
		// A two-way request is answered before the connection closes, so its client fails fast instead of
		// waiting for its timeout.
		canReply := isRequest && twoWay && !event
		if canReply {
			msg.Type, msg.ID, msg.Private[privState] = codec.Request, id, int(ser)
		}
		if int32(bodyLen) < 0 {
			return 0, codec.Errorf(canReply, "dubbo: body length 0x%08x is negative as an int32 (limit %d)", bodyLen, c.maxBody)
		}
		return 0, codec.Errorf(canReply, "dubbo: body length %d exceeds limit %d", bodyLen, c.maxBody)
	}
	n := headerLen + int(bodyLen)
	if len(buf) < n {
		return n, codec.ErrIncomplete
	}
	frame := buf[:n:n]
	msg.ID, msg.Frame, msg.Private[privState] = id, frame, int(ser)

	if !isRequest {
		c.decodeResponse(frame, msg, status, ser, event)
		return n, nil
	}
	if event {
		c.decodeEvent(frame, msg, ser, twoWay)
		return n, nil
	}
	msg.Type = codec.Oneway
	if twoWay {
		msg.Type = codec.Request
	}
	if ser != serialHessian2 {
		return n, nil
	}
	if err := c.decodeRequestHead(frame, msg); err != nil {
		return 0, codec.Errorf(msg.Type == codec.Request, "dubbo: request %d: bad body: %v", id, err)
	}
	return n, nil
}

// decodeResponse fills in a response. A Hessian 2 body with status OK starts with the response type, which
// says whether the provider threw and whether attachments follow the value; those are decoded on demand.
func (c *Codec) decodeResponse(frame []byte, msg *codec.Message, status, ser byte, event bool) {
	msg.Status = int32(status)
	msg.Failed = status != StatusOK
	if event {
		// Apache Dubbo treats every event response as a heartbeat response.
		msg.Type = codec.HeartbeatResponse
		return
	}
	msg.Type = codec.Response
	if status != StatusOK || ser != serialHessian2 {
		return
	}
	c.r.reset(frame)
	typ, next, err := c.r.readInt(headerLen)
	// A body the client cannot read is a failure too.
	msg.Failed = err != nil || typ < 0 || typ > 5 || typ == responseWithException || typ == responseWithExceptionAttach
	if err != nil || typ < 0 || typ > 5 {
		return
	}
	values := 1
	if typ == responseNullValue || typ == responseNullValueAttach {
		values = 0
	}
	msg.Private[privState] = int(ser) | stHessianResponse | int(typ)<<stTypeShift | values<<stArgShift
	msg.Private[privArgs] = next
	if typ >= responseWithExceptionAttach {
		msg.Metadata.Defer((*loader)(c), msg)
	}
}

// responseType is the type of a response whose Private has stHessianResponse set.
func responseType(st int) int { return (st & stTypeMask) >> stTypeShift }

// decodeEvent classifies a request with the event flag. Apache Dubbo answers an event only when it is a
// heartbeat (its data is null) and two-way; the readonly event ("R") and oneway heartbeats are never answered,
// so they are typed Oneway here and tagged with KeyEvent.
func (c *Codec) decodeEvent(frame []byte, msg *codec.Message, ser byte, twoWay bool) {
	body := frame[headerLen:]
	if ser != serialHessian2 {
		// The payload cannot be read without the serialization; heartbeats are the only two-way events.
		msg.Type = codec.Oneway
		if twoWay {
			msg.Type = codec.Heartbeat
		}
		return
	}
	kind := "other"
	switch {
	case len(body) == 0 || body[0] == tagNull:
		if twoWay {
			msg.Type = codec.Heartbeat
			return
		}
		kind = "heartbeat"
	case len(body) >= 2 && body[0] == 0x01 && body[1] == 'R':
		kind = "readonly"
	}
	msg.Type = codec.Oneway
	msg.Metadata.Add(KeyEvent, kind)
}

// decodeRequestHead reads the strings before the arguments: Dubbo version, service path, service version,
// method name and parameter-types descriptor.
func (c *Codec) decodeRequestHead(frame []byte, msg *codec.Message) error {
	r := &c.r
	r.reset(frame)
	dubboVersion, p, _, err := r.readString(headerLen, &c.scratch)
	if err != nil {
		return fmt.Errorf("dubbo version: %w", err)
	}
	st := int(msg.Private[privState]) | stHessianRequest
	if !readsResponseAttachments(dubboVersion) {
		st |= stOldClient
	}
	for _, key := range [...]string{KeyInterface, KeyVersion, KeyMethod} {
		s, next, _, err := r.readString(p, &c.scratch)
		if err != nil {
			return fmt.Errorf("%s: %w", headFieldName(key), err)
		}
		if len(s) > 0 {
			msg.Metadata.Add(key, c.names.String(s))
		}
		p = next
	}
	desc, next, _, err := r.readString(p, &c.scratch)
	if err != nil {
		return fmt.Errorf("parameter types: %w", err)
	}
	argc, ok := countArgs(desc)
	if !ok {
		st |= stBadDescriptor
	}
	msg.Private[privState] = st | argc<<stArgShift
	msg.Private[privArgs] = next
	msg.Metadata.Defer((*loader)(c), msg)
	return nil
}

// readsResponseAttachments reports whether a client that sends this Dubbo version in its requests can read
// response types 3 to 5, by the rule servers apply before they write them (Apache Dubbo's
// Version.isSupportResponseAttachment as of 2.7, and dubbo-go's): protocol version 2.0.2 or later, except
// 2.0.10 to 2.6.2. Those are framework versions: Dubbo before 2.6.3, which brought response attachments, sent
// its own release number there. Clients since then send the protocol version, "2.0.2". The version is
// compared as Java's Version.getIntVersion computes it: two decimal digits per part, and a three-part version
// multiplied by 100.
func readsResponseAttachments(version []byte) bool {
	v, parts, part, digits := 0, 0, 0, true
	for i := 0; i <= len(version); i++ {
		if i == len(version) || version[i] == '.' {
			v = v*100 + part
			parts++
			part, digits = 0, true
			continue
		}
		// Java keeps each part's leading digits ("2.0.2-SNAPSHOT" is 2.0.2).
		if c := version[i]; digits && c >= '0' && c <= '9' && part < 1000 {
			part = part*10 + int(c-'0')
		} else {
			digits = false
		}
	}
	if len(version) == 0 || parts > 4 {
		return false
	}
	if parts == 3 {
		v *= 100
	}
	return v >= 2000200 && (v < 2001000 || v >= 2060300)
}

func headFieldName(key string) string {
	switch key {
	case KeyInterface:
		return "service path"
	case KeyVersion:
		return "service version"
	}
	return "method name"
}

// skipStringOrNull skips a string or a null.
func (r *hreader) skipStringOrNull(p int) (int, error) {
	if p < len(r.b) && r.b[p] == tagNull {
		return p + 1, nil
	}
	if _, _, _, ok, err := r.stringChunk(p); err != nil {
		return 0, err
	} else if !ok {
		return 0, errAt(p, "expected a string, found tag 0x%02x", r.b[p])
	}
	return r.skipString(p)
}

// countArgs counts the parameters in a JVM descriptor such as "Ljava/lang/String;I[B" (3). "V" counts too:
// dubbo-go writes it for a nil argument.
func countArgs(desc []byte) (int, bool) {
	n := 0
	for i := 0; i < len(desc); n++ {
		for i < len(desc) && desc[i] == '[' {
			i++
		}
		if i == len(desc) {
			return 0, false
		}
		switch desc[i] {
		case 'V', 'Z', 'B', 'C', 'D', 'F', 'I', 'J', 'S':
			i++
		case 'L':
			end := bytes.IndexByte(desc[i:], ';')
			if end < 0 {
				return 0, false
			}
			i += end + 1
		default:
			return 0, false
		}
	}
	return n, true
}

// locate finds the attachment map of a Hessian 2 request or response by skipping the values before it (a
// request's arguments, a response's value or exception), once per message. A response whose type says it has
// no attachments gets an empty span just after its value: whatever follows (dubbo-go ends every response body
// with a null) stays where it is.
func (c *Codec) locate(msg *codec.Message) error {
	st := msg.Private[privState]
	if st&stLocated != 0 {
		return nil
	}
	if st&stBadDescriptor != 0 {
		return c.descriptorError(msg)
	}
	frame := msg.Frame
	if len(frame) < headerLen || msg.Private[privArgs] < headerLen || msg.Private[privArgs] > len(frame) {
		return errors.New("dubbo: message does not hold the frame it was decoded from")
	}
	response := st&stHessianResponse != 0
	r := &c.r
	r.reset(frame)
	argc := st >> stArgShift
	p := msg.Private[privArgs]
	for i := range argc {
		next, err := r.skipValue(p, 0)
		if err != nil {
			if response {
				return fmt.Errorf("dubbo: response %d: %s: %w", msg.ID, responseValueName(responseType(st)), err)
			}
			return fmt.Errorf("dubbo: request %d: argument %d of %d: %w", msg.ID, i+1, argc, err)
		}
		p = next
	}
	if r.sawClass {
		st |= stArgsClassDefs
	}
	r.sawRef, r.sawClass = false, false
	start, end, kind := p, p, mapAbsent
	switch {
	case response && responseType(st) < responseWithExceptionAttach:
	case p < len(frame) && frame[p] == tagNull:
		end, kind = p+1, mapNull
	case p < len(frame) && (frame[p] == tagMapUntyped || frame[p] == tagMapTyped):
		next, err := r.skipValue(p, 0)
		if err != nil {
			return fmt.Errorf("dubbo: %s %d: attachments: %w", kindName(response), msg.ID, err)
		}
		end, kind = next, mapUntyped
		if frame[p] == tagMapTyped {
			kind = mapTyped
		}
		if r.sawRef || r.sawClass {
			st |= stMapRenumbers
		}
	case response && p >= len(frame):
		return fmt.Errorf("dubbo: response %d: its type %d says attachments follow the %s, but the body ends at offset %d",
			msg.ID, responseType(st), responseValueName(responseType(st)), p)
	case response:
		return fmt.Errorf("dubbo: response %d: expected the attachment map after the %s, found tag 0x%02x at offset %d",
			msg.ID, responseValueName(responseType(st)), frame[p], p)
	case p < len(frame):
		return fmt.Errorf("dubbo: request %d: expected the attachment map after %d arguments, found tag 0x%02x at offset %d",
			msg.ID, argc, frame[p], p)
	}
	msg.Private[privState] = st | stLocated | kind<<stMapShift
	msg.Private[privMapStart], msg.Private[privMapEnd] = start, end
	return nil
}

// responseValueName names what precedes the attachments of a response of type typ, for errors.
func responseValueName(typ int) string {
	switch typ {
	case responseWithException, responseWithExceptionAttach:
		return "exception"
	case responseNullValue, responseNullValueAttach:
		return "response type"
	}
	return "value"
}

// kindName names a message for errors.
func kindName(response bool) string {
	if response {
		return "response"
	}
	return "request"
}

// descriptorError explains why the descriptor of msg could not be parsed; it is only needed on that path, so
// the descriptor is read again rather than kept.
func (c *Codec) descriptorError(msg *codec.Message) error {
	r := &c.r
	r.reset(msg.Frame)
	p, err := r.skipStringOrNull(headerLen)
	for range 3 {
		if err == nil {
			p, err = r.skipStringOrNull(p)
		}
	}
	if err == nil {
		var desc []byte
		if desc, _, _, err = r.readString(p, &c.scratch); err == nil {
			return fmt.Errorf("dubbo: request %d: parameter-types descriptor %q is not a JVM descriptor", msg.ID, desc)
		}
	}
	return fmt.Errorf("dubbo: request %d: parameter-types descriptor unreadable: %v", msg.ID, err)
}

// walkMap calls visit for each entry of a located attachment map, with the key's text (ok false when the key
// is null or not a scalar) and the offsets where the key and the value start; visit returns where the value
// ends.
func (c *Codec) walkMap(msg *codec.Message, visit func(key []byte, keyOK bool, k0, v0 int) (int, error)) error {
	st := msg.Private[privState]
	kind := (st & stMapMask) >> stMapShift
	if kind != mapUntyped && kind != mapTyped {
		return nil
	}
	frame := msg.Frame
	r := &c.r
	r.reset(frame)
	if st&stArgsClassDefs != 0 {
		// Objects in the map may be instances of classes the arguments defined.
		if _, err := r.skipValues(msg.Private[privArgs], st>>stArgShift, 0); err != nil {
			return err
		}
	}
	p, err := c.mapEntries(msg)
	if err != nil {
		return err
	}
	for {
		if p >= len(frame) {
			return truncated(p)
		}
		if frame[p] == tagEnd {
			return nil
		}
		k0 := p
		keyNull := frame[p] == tagNull
		key, v0, keyOK, err := r.appendText(c.keyBuf[:0], p, &c.scratch)
		if err != nil {
			return err
		}
		c.keyBuf = key
		if p, err = visit(key, keyOK && !keyNull, k0, v0); err != nil {
			return err
		}
	}
}

// mapEntries returns the offset of the first entry of a located attachment map, after its tag and type.
func (c *Codec) mapEntries(msg *codec.Message) (int, error) {
	p := msg.Private[privMapStart] + 1
	if (msg.Private[privState]&stMapMask)>>stMapShift == mapTyped {
		return c.r.skipType(p)
	}
	return p, nil
}

// LoadMetadata adds the attachments of msg, a request or a response, to its metadata. A request's keys decoded
// eagerly (interface, method, version) keep their header values: the header is what Dubbo itself dispatches on.
func (l *loader) LoadMetadata(msg *codec.Message) error {
	c := (*Codec)(l)
	request := msg.Private[privState]&stHessianRequest != 0
	if !request && msg.Private[privState]&stHessianResponse == 0 {
		return nil
	}
	if err := c.locate(msg); err != nil {
		return err
	}
	return c.walkMap(msg, func(key []byte, keyOK bool, _, v0 int) (int, error) {
		val, next, valOK, err := c.r.appendText(c.valBuf[:0], v0, &c.scratch)
		if err != nil {
			return 0, err
		}
		c.valBuf = val
		if !keyOK || !valOK {
			return next, nil
		}
		k := c.keys.String(key)
		_, dup := msg.Metadata.Get(k)
		if dup && request && (k == KeyInterface || k == KeyMethod || k == KeyVersion || k == KeyEvent) {
			return next, nil // the header's own fields win over attachments of the same name
		}
		v := ""
		if len(val) <= maxInternedValue {
			v = c.values.String(val)
		} else {
			v = string(val)
		}
		if dup {
			// A key repeated in the map: the last value wins, as Java's map and dubbo-go-hessian2 read it,
			// so routes see what the provider will see.
			msg.Metadata.Set(k, v)
		} else {
			msg.Metadata.Add(k, v)
		}
		return next, nil
	})
}

// SetID rewrites the request id in the frame header, in place.
func (c *Codec) SetID(msg *codec.Message, id uint64) {
	if len(msg.Frame) >= headerLen {
		binary.BigEndian.PutUint64(msg.Frame[4:12], id)
	}
	msg.ID = id
}

// Encode appends msg to dst with its attachments edited by mutation, and points msg.Frame at the copy. Only
// the attachment map is re-encoded (set values are written as strings; untouched entries keep their bytes);
// every other byte is copied as it is. Hessian 2 requests and Hessian 2 responses with status OK can be
// edited; any message is copied unchanged by an empty mutation.
//
// A response whose type says it has no attachments (0 to 2) gets the type with attachments (3 to 5) and a
// map after its value. Only clients of Dubbo protocol 2.0.2 or later can read those, as every client since
// Dubbo 2.6.3 and dubbo-go is; EncodeReply, which knows the request, leaves older clients' responses alone.
func (c *Codec) Encode(dst []byte, msg *codec.Message, mutation *codec.Mutation) ([]byte, error) {
	return c.encode(dst, msg, mutation, true)
}

// EncodeReply is Encode for resp, the answer to req. A server writes response attachments only to a client
// whose requests say it can read them (Dubbo protocol 2.0.2 or later), so a mutation that would add them to a
// response answering an older client is refused, and the response goes back as the server wrote it.
func (c *Codec) EncodeReply(dst []byte, req, resp *codec.Message, mutation *codec.Mutation) ([]byte, error) {
	st := req.Private[privState]
	return c.encode(dst, resp, mutation, st&stHessianRequest == 0 || st&stOldClient == 0)
}

// encode is Encode; clientReads says whether the client can read response attachments it did not get.
func (c *Codec) encode(dst []byte, msg *codec.Message, mutation *codec.Mutation, clientReads bool) ([]byte, error) {
	frame := msg.Frame
	if len(frame) < headerLen {
		return dst, errors.New("dubbo: encode: the message holds no frame")
	}
	if mutation.Empty() {
		return c.copyFrame(dst, msg), nil
	}
	st := msg.Private[privState]
	switch {
	case st&stHessianRequest != 0:
		return c.encodeRequest(dst, msg, mutation)
	case st&stHessianResponse != 0:
		return c.encodeResponse(dst, msg, mutation, clientReads)
	}
	return dst, refusal(msg)
}

// copyFrame appends msg's frame to dst unchanged and points msg.Frame at the copy.
func (c *Codec) copyFrame(dst []byte, msg *codec.Message) []byte {
	out := append(dst, msg.Frame...)
	msg.Frame = out[len(dst):]
	return out
}

// refusal explains why a message that is neither a Hessian 2 request nor a Hessian 2 response with status OK
// cannot carry an edit.
func refusal(msg *codec.Message) error {
	frame := msg.Frame
	flag, status, ser := frame[2], frame[3], msg.Private[privState]&serialMask
	switch {
	case flag&flagEvent != 0:
		return fmt.Errorf("dubbo: encode: %s %d is an event, which has no attachments to rewrite", msg.Type, msg.ID)
	case ser != serialHessian2:
		return fmt.Errorf("dubbo: encode: cannot rewrite the attachments of %s %d: it is serialized with id %d, and only hessian2 (2) is supported",
			kindName(flag&flagRequest == 0), msg.ID, ser)
	case flag&flagRequest != 0:
		return fmt.Errorf("dubbo: encode: request %d was not decoded by this codec", msg.ID)
	case status != StatusOK:
		// Dubbo servers write an error string alone as the body of such a response (ExchangeCodec).
		return fmt.Errorf("dubbo: encode: response %d has status %d: a Dubbo response that is not OK carries an error message and no attachments",
			msg.ID, status)
	}
	return fmt.Errorf("dubbo: encode: response %d: its body does not start with a response type (0 to 5), so there is nowhere to put attachments",
		msg.ID)
}

// encodeRequest is Encode for a Hessian 2 request.
func (c *Codec) encodeRequest(dst []byte, msg *codec.Message, mutation *codec.Mutation) ([]byte, error) {
	if err := c.locate(msg); err != nil {
		return dst, err
	}
	frame := msg.Frame
	mapStart, mapEnd := msg.Private[privMapStart], msg.Private[privMapEnd]
	out := append(dst, frame[:mapStart]...)
	out, err := c.appendAttachments(out, msg, mutation)
	if err != nil {
		return dst, err
	}
	out = append(out, frame[mapEnd:]...)
	return c.finish(dst, out, msg)
}

// encodeResponse is Encode for a Hessian 2 response with status OK: the header, the value and whatever follows
// the map keep their bytes; only the response type (when attachments are added) and the map are written.
func (c *Codec) encodeResponse(dst []byte, msg *codec.Message, mutation *codec.Mutation, clientReads bool) ([]byte, error) {
	if err := c.locate(msg); err != nil {
		return dst, err
	}
	st := msg.Private[privState]
	typ, kind := responseType(st), (st&stMapMask)>>stMapShift
	if kind == mapAbsent || kind == mapNull {
		if len(mutation.Set) == 0 {
			// Nothing to remove, and a map holding nothing would only add bytes.
			return c.copyFrame(dst, msg), nil
		}
		if typ < responseWithExceptionAttach && !clientReads {
			return dst, fmt.Errorf("dubbo: encode: response %d answers a client whose Dubbo protocol version is older than 2.0.2 and cannot read response attachments",
				msg.ID)
		}
	}
	frame := msg.Frame
	values, mapStart, mapEnd := msg.Private[privArgs], msg.Private[privMapStart], msg.Private[privMapEnd]
	out := append(dst, frame[:headerLen]...)
	if typ < responseWithExceptionAttach {
		// A one-byte Hessian int, as Java's writeByte and dubbo-go write the type.
		out = append(out, byte(0x90+typ+withAttachments))
	} else {
		out = append(out, frame[headerLen:values]...)
	}
	out = append(out, frame[values:mapStart]...)
	out, err := c.appendAttachments(out, msg, mutation)
	if err != nil {
		return dst, err
	}
	out = append(out, frame[mapEnd:]...)
	return c.finish(dst, out, msg)
}

// appendAttachments appends the located attachment map of msg, edited by mutation, to out. A message without
// a map (or with a null one) gets a new map; on a response, that map starts with the protocol version, as a
// server's does.
func (c *Codec) appendAttachments(out []byte, msg *codec.Message, mutation *codec.Mutation) ([]byte, error) {
	st := msg.Private[privState]
	kind := (st & stMapMask) >> stMapShift
	renumbers := st&stMapRenumbers != 0
	frame := msg.Frame
	what := kindName(st&stHessianResponse != 0)

	c.written = c.written[:0]
	for range mutation.Set {
		c.written = append(c.written, false)
	}
	if kind == mapUntyped || kind == mapTyped {
		entries, err := c.mapEntries(msg)
		if err != nil {
			return out, err
		}
		out = append(out, frame[msg.Private[privMapStart]:entries]...)
		err = c.walkMap(msg, func(key []byte, keyOK bool, k0, v0 int) (int, error) {
			v1, err := c.r.skipValue(v0, 0)
			if err != nil {
				return 0, err
			}
			if !keyOK {
				out = append(out, frame[k0:v1]...)
				return v1, nil
			}
			set := lastSet(mutation, key)
			drop := removes(mutation, key)
			if (set >= 0 || drop) && renumbers && !isScalarTag(frame[v0]) {
				return 0, fmt.Errorf("dubbo: encode: cannot rewrite attachment %q of %s %d: its value is a collection or object and the map holds references that would be renumbered",
					key, what, msg.ID)
			}
			switch {
			case drop:
			case set >= 0:
				out = append(out, frame[k0:v0]...)
				out = appendString(out, mutation.Set[set].Value)
				c.written[set] = true
			default:
				out = append(out, frame[k0:v1]...)
			}
			return v1, nil
		})
		if err != nil {
			return out, fmt.Errorf("dubbo: encode: %s %d: attachments: %w", what, msg.ID, err)
		}
	} else {
		out = append(out, tagMapUntyped)
		if st&stHessianResponse != 0 && lastSetString(mutation, dubboVersionKey) < 0 && !removesString(mutation, dubboVersionKey) {
			out = appendString(appendString(out, dubboVersionKey), protocolVersion)
		}
	}
	for i, kv := range mutation.Set {
		if c.written[i] || lastSetString(mutation, kv.Key) != i || removesString(mutation, kv.Key) {
			continue
		}
		out = appendString(appendString(out, kv.Key), kv.Value)
	}
	return append(out, tagEnd), nil
}

// finish fixes the body length of the frame encoded at out[len(dst):] and decodes it into msg, which leaves
// msg consistent with the new bytes: offsets, and attachments loaded on demand.
func (c *Codec) finish(dst, out []byte, msg *codec.Message) ([]byte, error) {
	what := kindName(msg.Private[privState]&stHessianResponse != 0)
	bodyLen := len(out) - len(dst) - headerLen
	if bodyLen > c.maxBody {
		return dst, fmt.Errorf("dubbo: encode: %s %d: body length %d exceeds limit %d", what, msg.ID, bodyLen, c.maxBody)
	}
	binary.BigEndian.PutUint32(out[len(dst)+12:], uint32(bodyLen))
	orig := msg.Frame
	msg.Reset()
	if _, err := c.Decode(out[len(dst):], msg); err != nil {
		// The message must still describe the frame it held: the proxy sends that one when an edit fails.
		msg.Reset()
		_, _ = c.Decode(orig, msg)
		return dst, fmt.Errorf("dubbo: encode: re-encoded %s does not decode: %w", what, err)
	}
	return out, nil
}

// lastSet returns the index of the last Set entry for key, which is the one that wins, or -1.
func lastSet(m *codec.Mutation, key []byte) int {
	for i := len(m.Set) - 1; i >= 0; i-- {
		if m.Set[i].Key == string(key) {
			return i
		}
	}
	return -1
}

// removes reports whether m removes key.
func removes(m *codec.Mutation, key []byte) bool {
	for _, k := range m.Remove {
		if k == string(key) {
			return true
		}
	}
	return false
}

// lastSetString is lastSet for a string key.
func lastSetString(m *codec.Mutation, key string) int {
	for i := len(m.Set) - 1; i >= 0; i-- {
		if m.Set[i].Key == key {
			return i
		}
	}
	return -1
}

// removesString is removes for a string key.
func removesString(m *codec.Mutation, key string) bool {
	for _, k := range m.Remove {
		if k == key {
			return true
		}
	}
	return false
}

// HeartbeatReply appends the answer to the heartbeat req: an event response with status OK and the same id
// and serialization. Its body is the request's own, which for a heartbeat is the serialized null (Hessian 'N').
func (c *Codec) HeartbeatReply(dst []byte, req *codec.Message) []byte {
	ser := byte(req.Private[privState] & serialMask)
	body := []byte{tagNull}
	switch {
	case ser == 0:
		ser = serialHessian2
	case ser != serialHessian2 && len(req.Frame) > headerLen:
		body = req.Frame[headerLen:]
	}
	dst = appendHeader(dst, flagEvent|ser, StatusOK, req.ID, len(body))
	return append(dst, body...)
}

// ErrorReply appends a response to req with a failure status and a Hessian 2 string as its message. A Dubbo
// client reads a non-OK status as a failed call whatever the body, and reads the body as the error message
// with the response's serialization; the reply is always Hessian 2, which every Dubbo runtime ships, so it is
// readable even when the request used a serialization the codec cannot write.
func (c *Codec) ErrorReply(dst []byte, req *codec.Message, kind codec.ErrorKind, detail string) ([]byte, int32) {
	if req.Type != codec.Request {
		return dst, 0
	}
	status := ErrorStatus(kind)
	start := len(dst)
	dst = appendHeader(dst, serialHessian2, status, req.ID, 0)
	if len(detail) > maxErrorDetail {
		detail = detail[:maxErrorDetail]
	}
	message := "meltemi: " + kind.String()
	if detail != "" {
		message += ": " + detail
	}
	dst = appendString(dst, message)
	binary.BigEndian.PutUint32(dst[start+12:], uint32(len(dst)-start-headerLen))
	return dst, int32(status)
}

// ErrorStatus is the Dubbo response status an error reply of this kind carries.
func ErrorStatus(kind codec.ErrorKind) byte {
	switch kind {
	case codec.RouteNotFound, codec.ClusterNotFound:
		return StatusServiceNotFound
	case codec.BadResponse:
		return StatusBadResponse
	case codec.OverLimit:
		return StatusThreadpoolExhausted
	case codec.Timeout:
		return StatusServerTimeout
	case codec.BadRequest:
		return StatusBadRequest
	default: // NoHealthyUpstream, Unauthorized, Unspecified
		return StatusServerError
	}
}

// appendHeader appends a 16-byte header.
func appendHeader(dst []byte, flag, status byte, id uint64, bodyLen int) []byte {
	dst = append(dst, magicHigh, magicLow, flag, status)
	dst = binary.BigEndian.AppendUint64(dst, id)
	if bodyLen > math.MaxInt32 {
		bodyLen = math.MaxInt32
	}
	return binary.BigEndian.AppendUint32(dst, uint32(bodyLen))
}
