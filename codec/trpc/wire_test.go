package trpc

// Test helpers that write and read tRPC headers with the protobuf runtime, from descriptors that transcribe
// trpc.proto (trpc-group/trpc-protocol), so that the tests check the codec against the schema and a real
// protobuf parser rather than against its own protowire code.

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// trpcProto holds the messages of trpc.proto the codec reads.
var trpcProto = func() protoreflect.FileDescriptor {
	type f struct {
		name string
		num  int32
		typ  descriptorpb.FieldDescriptorProto_Type
		msg  string // message type name, for message and map fields
		rep  bool
	}
	u32, i32, byt, msg := descriptorpb.FieldDescriptorProto_TYPE_UINT32, descriptorpb.FieldDescriptorProto_TYPE_INT32,
		descriptorpb.FieldDescriptorProto_TYPE_BYTES, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE
	mapEntry := &descriptorpb.DescriptorProto{
		Name: proto.String("TransInfoEntry"),
		Field: []*descriptorpb.FieldDescriptorProto{
			{Name: proto.String("key"), Number: proto.Int32(1), Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(),
				Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), JsonName: proto.String("key")},
			{Name: proto.String("value"), Number: proto.Int32(2), Type: byt.Enum(),
				Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), JsonName: proto.String("value")},
		},
		Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
	}
	message := func(name string, fields ...f) *descriptorpb.DescriptorProto {
		d := &descriptorpb.DescriptorProto{Name: proto.String(name)}
		for _, fd := range fields {
			label := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL
			if fd.rep {
				label = descriptorpb.FieldDescriptorProto_LABEL_REPEATED
			}
			p := &descriptorpb.FieldDescriptorProto{Name: proto.String(fd.name), Number: proto.Int32(fd.num),
				Type: fd.typ.Enum(), Label: label.Enum(), JsonName: proto.String(fd.name)}
			if fd.msg != "" {
				p.TypeName = proto.String(fd.msg)
			}
			if fd.msg == "TransInfoEntry" {
				p.TypeName = proto.String(".trpc." + name + ".TransInfoEntry")
				d.NestedType = append(d.NestedType, proto.Clone(mapEntry).(*descriptorpb.DescriptorProto))
			}
			d.Field = append(d.Field, p)
		}
		return d
	}
	trans := func(num int32) f { return f{"trans_info", num, msg, "TransInfoEntry", true} }
	file := &descriptorpb.FileDescriptorProto{
		Name:    proto.String("trpc/trpc.proto"),
		Package: proto.String("trpc"),
		Syntax:  proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{
			message("RequestProtocol", f{"version", 1, u32, "", false}, f{"call_type", 2, u32, "", false},
				f{"request_id", 3, u32, "", false}, f{"timeout", 4, u32, "", false}, f{"caller", 5, byt, "", false},
				f{"callee", 6, byt, "", false}, f{"func", 7, byt, "", false}, f{"message_type", 8, u32, "", false},
				trans(9), f{"content_type", 10, u32, "", false}, f{"content_encoding", 11, u32, "", false},
				f{"attachment_size", 12, u32, "", false}),
			message("ResponseProtocol", f{"version", 1, u32, "", false}, f{"call_type", 2, u32, "", false},
				f{"request_id", 3, u32, "", false}, f{"ret", 4, i32, "", false}, f{"func_ret", 5, i32, "", false},
				f{"error_msg", 6, byt, "", false}, f{"message_type", 7, u32, "", false}, trans(8),
				f{"content_type", 9, u32, "", false}, f{"content_encoding", 10, u32, "", false},
				f{"attachment_size", 12, u32, "", false}),
			message("TrpcStreamInitMeta", f{"request_meta", 1, msg, ".trpc.TrpcStreamInitRequestMeta", false},
				f{"response_meta", 2, msg, ".trpc.TrpcStreamInitResponseMeta", false},
				f{"init_window_size", 3, u32, "", false}, f{"content_type", 4, u32, "", false},
				f{"content_encoding", 5, u32, "", false}),
			message("TrpcStreamInitRequestMeta", f{"caller", 1, byt, "", false}, f{"callee", 2, byt, "", false},
				f{"func", 3, byt, "", false}, f{"message_type", 4, u32, "", false}, trans(5)),
			message("TrpcStreamInitResponseMeta", f{"ret", 1, i32, "", false}, f{"error_msg", 2, byt, "", false}),
			message("TrpcStreamFeedBackMeta", f{"window_size_increment", 1, u32, "", false}),
			message("TrpcStreamCloseMeta", f{"close_type", 1, i32, "", false}, f{"ret", 2, i32, "", false},
				f{"msg", 3, byt, "", false}, f{"message_type", 4, u32, "", false}, trans(5),
				f{"func_ret", 6, i32, "", false}),
		},
	}
	fd, err := protodesc.NewFile(file, nil)
	if err != nil {
		panic(fmt.Sprintf("trpc.proto transcription: %v", err))
	}
	return fd
}()

// fields are a message's field values by name: integers, strings (for bytes), map[string]string (for
// trans_info), or fields (for embedded messages).
type fields map[string]any

// build marshals a message of trpc.proto deterministically.
func build(t testing.TB, name string, values fields) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(newMessage(t, name, values))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newMessage(t testing.TB, name string, values fields) *dynamicpb.Message {
	t.Helper()
	md := trpcProto.Messages().ByName(protoreflect.Name(name))
	m := dynamicpb.NewMessage(md)
	for k, v := range values {
		fd := md.Fields().ByName(protoreflect.Name(k))
		if fd == nil {
			t.Fatalf("%s has no field %s", name, k)
		}
		switch v := v.(type) {
		case int:
			if fd.Kind() == protoreflect.Int32Kind {
				m.Set(fd, protoreflect.ValueOfInt32(int32(v)))
			} else {
				m.Set(fd, protoreflect.ValueOfUint32(uint32(v)))
			}
		case string:
			m.Set(fd, protoreflect.ValueOfBytes([]byte(v)))
		case map[string]string:
			mp := m.Mutable(fd).Map()
			for mk, mv := range v {
				mp.Set(protoreflect.ValueOfString(mk).MapKey(), protoreflect.ValueOfBytes([]byte(mv)))
			}
		case fields:
			m.Set(fd, protoreflect.ValueOfMessage(newMessage(t, string(fd.Message().Name()), v)))
		default:
			t.Fatalf("field %s: value of type %T", k, v)
		}
	}
	return m
}

// parsed is a message of trpc.proto as the protobuf runtime reads it.
type parsed struct{ m *dynamicpb.Message }

// parse reads b as a message of trpc.proto with the protobuf runtime.
func parse(t testing.TB, name string, b []byte) parsed {
	t.Helper()
	m := dynamicpb.NewMessage(trpcProto.Messages().ByName(protoreflect.Name(name)))
	if err := proto.Unmarshal(b, m); err != nil {
		t.Fatalf("protobuf cannot read the %s: %v", name, err)
	}
	return parsed{m}
}

func (p parsed) field(name string) protoreflect.FieldDescriptor {
	return p.m.Descriptor().Fields().ByName(protoreflect.Name(name))
}

// int returns an integer field.
func (p parsed) int(name string) int64 {
	v := p.m.Get(p.field(name))
	if p.field(name).Kind() == protoreflect.Int32Kind {
		return v.Int()
	}
	return int64(v.Uint())
}

// str returns a bytes field as a string.
func (p parsed) str(name string) string { return string(p.m.Get(p.field(name)).Bytes()) }

// sub returns an embedded message.
func (p parsed) sub(name string) parsed {
	return parsed{p.m.Get(p.field(name)).Message().Interface().(*dynamicpb.Message)}
}

// trans returns the trans_info map.
func (p parsed) trans() map[string]string {
	out := map[string]string{}
	p.m.Get(p.field("trans_info")).Map().Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
		out[k.String()] = string(v.Bytes())
		return true
	})
	return out
}

// unaryFrame puts a fixed header in front of a protocol header, body and attachment. id goes in the fixed
// header.
func unaryFrame(id uint32, hdr, body, attachment []byte) []byte {
	f := fixedHeader(0, 0, id, 16+len(hdr)+len(body)+len(attachment), len(hdr))
	f = append(f, hdr...)
	f = append(f, body...)
	return append(f, attachment...)
}

// streamFrame puts a fixed header in front of a stream meta or data.
func streamFrame(streamType byte, id uint32, payload []byte) []byte {
	return append(fixedHeader(1, streamType, id, 16+len(payload), 0), payload...)
}

// fixedHeader writes the 16-byte fixed header, protocol version 1, as the protocol design describes it.
func fixedHeader(dataType, streamType byte, id uint32, total, hdrLen int) []byte {
	f := []byte{0x09, 0x30, dataType, streamType}
	f = binary.BigEndian.AppendUint32(f, uint32(total))
	f = binary.BigEndian.AppendUint16(f, uint16(hdrLen))
	f = binary.BigEndian.AppendUint32(f, id)
	return append(f, 1, 0)
}

// protoHeader returns the protocol header of a unary frame.
func protoHeader(frame []byte) []byte {
	return frame[16 : 16+int(binary.BigEndian.Uint16(frame[8:10]))]
}

// checkSizes checks the fixed header's sizes against a frame's length.
func checkSizes(t testing.TB, frame []byte) {
	t.Helper()
	if len(frame) < 16 || int(binary.BigEndian.Uint32(frame[4:8])) != len(frame) ||
		16+int(binary.BigEndian.Uint16(frame[8:10])) > len(frame) {
		t.Fatalf("frame of %d bytes has total size %d and header size %d", len(frame),
			binary.BigEndian.Uint32(frame[4:8]), binary.BigEndian.Uint16(frame[8:10]))
	}
}

// golden returns the frames tRPC-Go v1.0.3 wrote (testdata/frames, written by testdata/trpcgo).
func golden(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "frames", name+".bin"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// goldenNames lists the golden frames.
func goldenNames(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "frames", "*.bin"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden frames: %v", err)
	}
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f[:len(f)-len(".bin")]))
	}
	slices.Sort(names)
	return names
}

// protoEqual compares two parsed messages as protobuf does.
func protoEqual(a, b parsed) bool { return proto.Equal(a.m, b.m) }
