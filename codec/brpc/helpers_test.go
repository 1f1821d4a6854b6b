package brpc

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/meltemi-mesh/meltemi/codec"
)

// testFactory builds a factory through the registration, as the proxy does.
func testFactory(tb testing.TB, config string) *Factory {
	tb.Helper()
	f, err := Registration().New([]byte(config))
	if err != nil {
		tb.Fatal(err)
	}
	return f.(*Factory)
}

func newCodec(tb testing.TB) *Codec { return testFactory(tb, "").NewCodec(codec.Downstream).(*Codec) }

func newUpstream(tb testing.TB) *Codec { return testFactory(tb, "").NewCodec(codec.Upstream).(*Codec) }

// decodeOne decodes a frame that must be whole and valid.
func decodeOne(tb testing.TB, c *Codec, frame []byte) *codec.Message {
	tb.Helper()
	msg := &codec.Message{}
	n, err := c.Decode(frame, msg)
	if err != nil {
		tb.Fatalf("decode: %v", err)
	}
	if n != len(frame) {
		tb.Fatalf("decode: n = %d, want %d", n, len(frame))
	}
	return msg
}

// Protobuf building blocks, written with protowire so that tests spell out the bytes the spec defines.

// vf is a varint field.
func vf(num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
}

// bf is a length-delimited field holding the concatenation of parts.
func bf(num protowire.Number, parts ...[]byte) []byte {
	body := bytes.Join(parts, nil)
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), body)
}

// str is a string as a part of bf.
func str(s string) []byte { return []byte(s) }

// cat concatenates fields into a message.
func cat(fields ...[]byte) []byte { return bytes.Join(fields, nil) }

// reqMeta is an RpcRequestMeta field (RpcMeta field 1) with the given service and method, and more fields.
func reqMeta(service, method string, more ...[]byte) []byte {
	return bf(metaRequest, append([][]byte{bf(requestServiceName, str(service)), bf(requestMethodName, str(method))}, more...)...)
}

// respMeta is an RpcResponseMeta field (RpcMeta field 2); code 0 and text "" are left out.
func respMeta(code int32, text string) []byte {
	var parts [][]byte
	if code != 0 {
		parts = append(parts, vf(responseErrorCode, uint64(code)))
	}
	if text != "" {
		parts = append(parts, bf(responseErrorText, str(text)))
	}
	return bf(metaResponse, parts...)
}

// userField is one user_fields entry (RpcMeta field 9).
func userField(key, value string) []byte {
	return bf(metaUserFields, bf(entryKey, str(key)), bf(entryValue, str(value)))
}

// buildFrame assembles a baidu_std frame.
func buildFrame(meta []byte, payload, attachment string) []byte {
	out := []byte(magic)
	out = binary.BigEndian.AppendUint32(out, uint32(len(meta)+len(payload)+len(attachment)))
	out = binary.BigEndian.AppendUint32(out, uint32(len(meta)))
	out = append(out, meta...)
	out = append(out, payload...)
	return append(out, attachment...)
}

// request is a typical brpc request: service, method, log_id, correlation_id and a payload.
func request(id uint64, more ...[]byte) []byte {
	meta := cat(reqMeta("example.EchoService", "Echo", vf(3, 99)), vf(metaCorrelationID, id))
	return buildFrame(cat(append([][]byte{meta}, more...)...), "\x0a\x05hello", "")
}

// response is a typical brpc response.
func response(id uint64, code int32, text string) []byte {
	return buildFrame(cat(respMeta(code, text), vf(metaCorrelationID, id)), "\x0a\x03hey", "")
}

// rpcMetaType is brpc's RpcMeta, described in code so that tests can decode frames with the protobuf library
// itself, independently of the codec.
var rpcMetaType = func() protoreflect.MessageType {
	opt := func(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type) *descriptorpb.FieldDescriptorProto {
		return &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(num), Type: typ.Enum(),
			Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()}
	}
	msg := func(name string, num int32, typeName string) *descriptorpb.FieldDescriptorProto {
		f := opt(name, num, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE)
		f.TypeName = proto.String(typeName)
		return f
	}
	const (
		tString = descriptorpb.FieldDescriptorProto_TYPE_STRING
		tBytes  = descriptorpb.FieldDescriptorProto_TYPE_BYTES
		tInt32  = descriptorpb.FieldDescriptorProto_TYPE_INT32
		tInt64  = descriptorpb.FieldDescriptorProto_TYPE_INT64
	)
	userFields := msg("user_fields", 9, ".brpc.policy.RpcMeta.UserFieldsEntry")
	userFields.Label = descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
	file := &descriptorpb.FileDescriptorProto{
		Name:    proto.String("brpc_codec_test/baidu_rpc_meta.proto"),
		Package: proto.String("brpc.policy"),
		Syntax:  proto.String("proto2"),
		MessageType: []*descriptorpb.DescriptorProto{
			{
				Name: proto.String("RpcMeta"),
				Field: []*descriptorpb.FieldDescriptorProto{
					msg("request", 1, ".brpc.policy.RpcRequestMeta"),
					msg("response", 2, ".brpc.policy.RpcResponseMeta"),
					opt("compress_type", 3, tInt32),
					opt("correlation_id", 4, tInt64),
					opt("attachment_size", 5, tInt32),
					opt("authentication_data", 7, tBytes),
					userFields,
				},
				NestedType: []*descriptorpb.DescriptorProto{{
					Name:    proto.String("UserFieldsEntry"),
					Field:   []*descriptorpb.FieldDescriptorProto{opt("key", 1, tString), opt("value", 2, tString)},
					Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
				}},
			},
			{
				Name: proto.String("RpcRequestMeta"),
				Field: []*descriptorpb.FieldDescriptorProto{
					opt("service_name", 1, tString), opt("method_name", 2, tString), opt("log_id", 3, tInt64),
					opt("trace_id", 4, tInt64), opt("span_id", 5, tInt64), opt("parent_span_id", 6, tInt64),
					// request_id is a string in brpc; bytes here, since pbrpc puts a message in the same field.
					opt("request_id", 7, tBytes), opt("timeout_ms", 8, tInt32),
				},
			},
			{
				Name:  proto.String("RpcResponseMeta"),
				Field: []*descriptorpb.FieldDescriptorProto{opt("error_code", 1, tInt32), opt("error_text", 2, tString)},
			},
		},
	}
	fd, err := protodesc.NewFile(file, nil)
	if err != nil {
		panic(err)
	}
	return dynamicpb.NewMessageType(fd.Messages().ByName("RpcMeta"))
}()

// metaView is an RpcMeta as the protobuf library reads it.
type metaView struct {
	ID             int64
	Service        string
	Method         string
	ErrorCode      int32
	ErrorText      string
	Compress       int32
	AttachmentSize int32
	UserFields     map[string]string
	msg            proto.Message
}

// readMeta decodes the meta of frame with the protobuf library and returns it with the payload and attachment
// (everything after the meta).
func readMeta(tb testing.TB, frame []byte) (metaView, []byte) {
	tb.Helper()
	v, rest, err := libraryMeta(frame)
	if err != nil {
		tb.Fatal(err)
	}
	return v, rest
}

// libraryMeta is readMeta returning its error.
func libraryMeta(frame []byte) (metaView, []byte, error) {
	if len(frame) < headerLen || string(frame[:4]) != magic {
		return metaView{}, nil, fmt.Errorf("not a frame: % x", frame)
	}
	body := binary.BigEndian.Uint32(frame[4:8])
	metaSize := binary.BigEndian.Uint32(frame[8:12])
	if int(body)+headerLen != len(frame) || metaSize > body {
		return metaView{}, nil, fmt.Errorf("header says body %d meta %d, frame has %d bytes", body, metaSize, len(frame))
	}
	m := rpcMetaType.New().Interface()
	if err := proto.Unmarshal(frame[headerLen:headerLen+int(metaSize)], m); err != nil {
		return metaView{}, nil, fmt.Errorf("protobuf cannot read the meta: %w", err)
	}
	r := m.ProtoReflect()
	fields := r.Descriptor().Fields()
	v := metaView{msg: m, UserFields: map[string]string{}}
	v.ID = r.Get(fields.ByName("correlation_id")).Int()
	v.Compress = int32(r.Get(fields.ByName("compress_type")).Int())
	v.AttachmentSize = int32(r.Get(fields.ByName("attachment_size")).Int())
	req := r.Get(fields.ByName("request")).Message()
	v.Service = req.Get(req.Descriptor().Fields().ByName("service_name")).String()
	v.Method = req.Get(req.Descriptor().Fields().ByName("method_name")).String()
	resp := r.Get(fields.ByName("response")).Message()
	v.ErrorCode = int32(resp.Get(resp.Descriptor().Fields().ByName("error_code")).Int())
	v.ErrorText = resp.Get(resp.Descriptor().Fields().ByName("error_text")).String()
	r.Get(fields.ByName("user_fields")).Map().Range(func(k protoreflect.MapKey, val protoreflect.Value) bool {
		v.UserFields[k.String()] = val.String()
		return true
	})
	return v, frame[headerLen+int(metaSize):], nil
}

// withoutID returns a copy of the meta message with correlation_id cleared, to compare everything else. Fields
// that hold their default value are cleared too: SetID may leave them out to make room for a longer id, which
// changes nothing a reader of the meta sees (see compactMeta).
func (v metaView) withoutID() proto.Message {
	m := proto.Clone(v.msg)
	r := m.ProtoReflect()
	fields := r.Descriptor().Fields()
	r.Clear(fields.ByName("correlation_id"))
	if compress := fields.ByName("compress_type"); r.Has(compress) && r.Get(compress).Int() == 0 {
		r.Clear(compress)
	}
	if respField := fields.ByName("response"); r.Has(respField) {
		resp := r.Mutable(respField).Message()
		code := resp.Descriptor().Fields().ByName("error_code")
		if resp.Has(code) && resp.Get(code).Int() == 0 {
			resp.Clear(code)
		}
		empty := true
		resp.Range(func(protoreflect.FieldDescriptor, protoreflect.Value) bool { empty = false; return false })
		if empty && len(resp.GetUnknown()) == 0 {
			r.Clear(respField)
		}
	}
	return m
}

// withoutUserFields returns a copy of the meta message with user_fields cleared.
func (v metaView) withoutUserFields() proto.Message {
	m := proto.Clone(v.msg)
	r := m.ProtoReflect()
	r.Clear(r.Descriptor().Fields().ByName("user_fields"))
	return m
}

// pbrpcFrames reads what the real pbrpc peer sent in a recorded scenario (see testdata/pbrpcpeer).
func pbrpcFrames(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "pbrpc", name+".bin"))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// metadataOf lists msg's metadata, loading deferred entries.
func metadataOf(msg *codec.Message) map[string]string {
	out := map[string]string{}
	msg.Metadata.All(func(k, v string) bool {
		out[k] = v
		return true
	})
	return out
}
