package dubbo

import (
	"errors"
	"strings"
	"testing"

	hessian "github.com/apache/dubbo-go-hessian2"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/codec/codectest"
)

// TestConformance runs the codec conformance kit on frames written by dubbo-go-hessian2.
func TestConformance(t *testing.T) { codectest.Run(t, conformanceSuite(t)) }

// FuzzConformance checks the kit's invariants on arbitrary bytes, seeded with the same frames.
func FuzzConformance(f *testing.F) { codectest.Fuzz(f, conformanceSuite(f)) }

// conformanceSuite describes the Dubbo codec to the kit. The metadata of each request is everything the codec
// decodes from it, attachments included, so a mutation that loses or invents a key shows.
func conformanceSuite(t testing.TB) codectest.Suite {
	echoMeta := map[string]string{
		"interface": echoService.Path, "method": "echo", "version": "1.0.0",
		"path": echoService.Path, "group": "blue", "timeout": "3000",
	}
	withAttachments := func(m map[string]string, atta map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range m {
			out[k] = v
		}
		for k, v := range atta {
			out[k] = v
		}
		return out
	}
	unicode := hessian.Service{Path: "org.example.服务", Version: "2.0", Method: "grüß", Group: "g😀"}
	long := strings.Repeat("é😀", 11000) // 33000 UTF-16 units, over 32768: a chunked Hessian string
	typedMap := append(encodeValues(t, "2.0.2", "svc.T", "", "m", "[I", []int32{1, 2}), 'M')
	typedMap = append(append(typedMap, encodeValues(t, "java.util.TreeMap", "k", "v", "n", int32(-3))...), 'Z')

	return codectest.Suite{
		Registration: Registration(),
		Samples: []codectest.Sample{{
			Name: "request",
			Frame: libRequest(t, hessian.PackageRequest_TwoWay, 42, echoService, []any{"hello"},
				map[string]string{"trace-id": "abc123", "env": "canary"}),
			Type:     codec.Request,
			ID:       42,
			Metadata: withAttachments(echoMeta, map[string]string{"trace-id": "abc123", "env": "canary"}),
		}, {
			Name: "request-pojo",
			Frame: libRequest(t, hessian.PackageRequest_TwoWay, 2, hessian.Service{Path: "svc.P", Method: "m"},
				[]any{&user{Name: "ann", Friends: []*user{{Name: "bob"}}}, int64(5), []byte("b")}, map[string]string{"k": "v"}),
			Type:     codec.Request,
			ID:       2,
			Metadata: map[string]string{"interface": "svc.P", "method": "m", "path": "svc.P", "version": "", "k": "v"},
		}, {
			Name: "request-unicode-large-id",
			Frame: libRequest(t, hessian.PackageRequest_TwoWay, 1<<40, unicode, []any{"x"},
				map[string]string{"emoji": "a😀b🎉"}),
			Type: codec.Request,
			ID:   1 << 40,
			Metadata: map[string]string{"interface": "org.example.服务", "method": "grüß", "version": "2.0",
				"path": "org.example.服务", "group": "g😀", "emoji": "a😀b🎉"},
		}, {
			Name: "request-chunked-strings",
			Frame: libRequest(t, hessian.PackageRequest_TwoWay, 3, hessian.Service{Path: "svc.L", Method: "big"},
				[]any{"short"}, map[string]string{"env": "prod", "long": long}),
			Type: codec.Request,
			ID:   3,
			Metadata: map[string]string{"interface": "svc.L", "method": "big", "path": "svc.L", "version": "",
				"env": "prod", "long": long},
		}, {
			Name:     "request-without-attachments",
			Frame:    rawFrame(0xc2, 0, 8, encodeValues(t, "2.0.2", "svc.S", nil, "m", "Ljava/lang/String;", "arg")),
			Type:     codec.Request,
			ID:       8,
			Metadata: map[string]string{"interface": "svc.S", "method": "m"},
		}, {
			Name:     "request-typed-map",
			Frame:    rawFrame(0xc2, 0, 10, typedMap),
			Type:     codec.Request,
			ID:       10,
			Metadata: map[string]string{"interface": "svc.T", "method": "m", "k": "v", "n": "-3"},
		}, {
			// Another serialization is framed and answered from the header alone; its body cannot be edited.
			Name:      "request-fastjson",
			Frame:     rawFrame(0xc6, 0, 12, []byte("\"2.0.2\"\n\"svc.J\"\n\"\"\n\"m\"\n\"\"\n{}\n")),
			Type:      codec.Request,
			ID:        12,
			Immutable: true,
		}, {
			Name:     "oneway",
			Frame:    libRequest(t, hessian.PackageRequest, 7, hessian.Service{Path: "a.B", Method: "fire"}, []any{int32(1)}, nil),
			Type:     codec.Oneway,
			ID:       7,
			Metadata: map[string]string{"interface": "a.B", "method": "fire", "path": "a.B", "version": ""},
		}, {
			Name:  "heartbeat",
			Frame: libRequest(t, hessian.PackageHeartbeat, 11, hessian.Service{}, []any{}, nil),
			Type:  codec.Heartbeat,
			ID:    11,
		}, {
			Name:      "readonly-event",
			Frame:     rawFrame(0xa2, 0, 13, encodeValues(t, "R")),
			Type:      codec.Oneway,
			ID:        13,
			Metadata:  map[string]string{KeyEvent: "readonly"},
			Immutable: true,
		}, {
			Name:   "response",
			Frame:  libResponse(t, hessian.PackageResponse, 42, StatusOK, "pong"),
			Type:   codec.Response,
			ID:     42,
			Status: StatusOK,
		}, {
			// Response attachments are decoded on demand, as a request's are.
			Name: "response-with-attachments",
			Frame: libResponse(t, hessian.PackageResponse, 2, StatusOK,
				hessian.NewResponse(&user{Name: "u"}, nil, map[string]string{"dubbo": "2.0.2", "x-served-by": "v1"})),
			Type:     codec.Response,
			ID:       2,
			Status:   StatusOK,
			Metadata: map[string]string{"dubbo": "2.0.2", "x-served-by": "v1"},
		}, {
			Name: "response-null-with-attachments",
			Frame: libResponse(t, hessian.PackageResponse, 4, StatusOK,
				hessian.NewResponse(nil, nil, map[string]string{"dubbo": "2.0.2"})),
			Type:     codec.Response,
			ID:       4,
			Status:   StatusOK,
			Metadata: map[string]string{"dubbo": "2.0.2"},
		}, {
			Name: "response-exception-with-attachments",
			Frame: libResponse(t, hessian.PackageResponse, 5, StatusOK,
				hessian.NewResponse(nil, errors.New("boom"), map[string]string{"dubbo": "2.0.2"})),
			Type:     codec.Response,
			ID:       5,
			Status:   StatusOK,
			Failed:   true,
			Metadata: map[string]string{"dubbo": "2.0.2"},
		}, {
			Name:   "response-exception",
			Frame:  libResponse(t, hessian.PackageResponse, 3, StatusOK, hessian.NewResponse(nil, errors.New("boom"), nil)),
			Type:   codec.Response,
			ID:     3,
			Status: StatusOK,
			Failed: true,
		}, {
			Name:   "response-service-error",
			Frame:  libResponse(t, hessian.PackageResponse, 8, StatusServiceError, hessian.NewResponse(nil, errors.New("failed"), nil)),
			Type:   codec.Response,
			ID:     8,
			Status: StatusServiceError,
			Failed: true,
		}, {
			Name:   "heartbeat-response",
			Frame:  libResponse(t, hessian.PackageHeartbeat, 11, StatusOK, nil),
			Type:   codec.HeartbeatResponse,
			ID:     11,
			Status: StatusOK,
		}},
		Multiplexing:    true,
		MutableKeys:     []string{"env", "trace-id", "x-codectest"},
		ZeroAllocDecode: true,
		Foreign:         codectest.Preambles(Protocol),
	}
}
