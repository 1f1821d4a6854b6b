package dubbo

// Helpers that make and read frames with the reference Go implementation, dubbo-go-hessian2, so the tests
// check the codec against a real peer's bytes rather than against itself.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	hessian "github.com/apache/dubbo-go-hessian2"
)

// user is a POJO argument: Java's Hessian writes it as a class definition and an object instance.
type user struct {
	Name    string
	Age     int32
	Tags    []string
	Friends []*user
}

func (user) JavaClassName() string { return "org.example.User" }

func init() { hessian.RegisterPOJO(&user{}) }

// libRequest builds a request frame with dubbo-go-hessian2's packet encoder.
func libRequest(t testing.TB, typ hessian.PackageType, id int64, svc hessian.Service, args []any, atta map[string]string) []byte {
	t.Helper()
	c := hessian.NewHessianCodec(nil)
	b, err := c.Write(svc, hessian.DubboHeader{SerialID: serialHessian2, Type: typ, ID: id}, hessian.NewRequest(args, atta))
	if err != nil {
		t.Fatalf("dubbo-go-hessian2 request: %v", err)
	}
	return b
}

// libResponse builds a response frame with dubbo-go-hessian2's packet encoder.
func libResponse(t testing.TB, typ hessian.PackageType, id int64, status byte, body any) []byte {
	t.Helper()
	c := hessian.NewHessianCodec(nil)
	b, err := c.Write(hessian.Service{}, hessian.DubboHeader{SerialID: serialHessian2, Type: typ, ID: id, ResponseStatus: status}, body)
	if err != nil {
		t.Fatalf("dubbo-go-hessian2 response: %v", err)
	}
	return b
}

// rawFrame puts a 16-byte header in front of body.
func rawFrame(flag, status byte, id uint64, body []byte) []byte {
	f := appendHeader(nil, flag, status, id, len(body))
	return append(f, body...)
}

// encodeValues encodes values one after another with one dubbo-go-hessian2 encoder, as a body is written.
func encodeValues(t testing.TB, values ...any) []byte {
	t.Helper()
	e := hessian.NewEncoder()
	for i, v := range values {
		if err := e.Encode(v); err != nil {
			t.Fatalf("dubbo-go-hessian2 encode value %d (%T): %v", i, v, err)
		}
	}
	return e.Buffer()
}

// libRead decodes a frame with dubbo-go-hessian2. For a request, body is [version, path, service version,
// method, types, args, attachments]; for a response, a *hessian.Response.
func libRead(t testing.TB, frame []byte) (hessian.DubboHeader, any) {
	t.Helper()
	r := bufio.NewReaderSize(bytes.NewReader(frame), len(frame)+64)
	c := hessian.NewHessianCodec(r)
	var h hessian.DubboHeader
	if err := c.ReadHeader(&h); err != nil {
		t.Fatalf("dubbo-go-hessian2 ReadHeader: %v", err)
	}
	if h.Type&hessian.PackageRequest != 0 && h.Type&hessian.PackageHeartbeat == 0 {
		body := make([]any, 7)
		if err := c.ReadBody(body); err != nil {
			t.Fatalf("dubbo-go-hessian2 ReadBody (request): %v", err)
		}
		return h, body
	}
	resp := &hessian.Response{}
	if err := c.ReadBody(resp); err != nil {
		t.Fatalf("dubbo-go-hessian2 ReadBody (response): %v", err)
	}
	return h, resp
}

// libAttachments returns the attachments dubbo-go-hessian2 reads from a request frame.
func libAttachments(t testing.TB, frame []byte) map[string]string {
	t.Helper()
	_, body := libRead(t, frame)
	atta, _ := body.([]any)[6].(map[string]string)
	return atta
}

// echoService is the service of most test requests.
var echoService = hessian.Service{
	Path:      "org.apache.dubbo.samples.EchoService",
	Interface: "org.apache.dubbo.samples.EchoService",
	Version:   "1.0.0",
	Group:     "blue",
	Method:    "echo",
	Timeout:   3 * time.Second,
}

// idOf reads the request id of a frame.
func idOf(frame []byte) uint64 { return binary.BigEndian.Uint64(frame[4:12]) }
