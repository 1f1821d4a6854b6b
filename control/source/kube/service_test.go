package kube

import (
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meltemi-mesh/meltemi/control/model"
)

var created = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

func service(mutate func(*corev1.Service)) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "shop", CreationTimestamp: metav1.NewTime(created)},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeClusterIP,
			ClusterIP:  "10.0.0.7",
			ClusterIPs: []string{"10.0.0.7"},
			Ports: []corev1.ServicePort{
				{Name: "tcp-dubbo", Port: 20880, TargetPort: intstr.FromInt32(20881), Protocol: corev1.ProtocolTCP},
			},
		},
	}
	if mutate != nil {
		mutate(svc)
	}
	return svc
}

func slice(name string, ports map[string]int32, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: map[string]string{discoveryv1.LabelServiceName: "demo"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   eps,
	}
	for n, p := range ports {
		es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: new(n), Port: new(p)})
	}
	return es
}

func podEndpoint(ip, pod string, ready *bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{
		Addresses:  []string{ip},
		Conditions: discoveryv1.EndpointConditions{Ready: ready},
		TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: pod},
	}
}

func pod(name, node, account string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, ServiceAccountName: account},
	}
}

func TestConvertService(t *testing.T) {
	pods := map[string]*corev1.Pod{
		"shop/v1": pod("v1", "node-a", "demo", map[string]string{"app": "demo", "version": "v1"}),
		"shop/v2": pod("v2", "node-b", "demo", map[string]string{"app": "demo", "version": "v2", labelLocality: "eu.west-1.rack-9"}),
	}
	nodes := map[string]map[string]string{
		"node-a": {labelRegion: "eu", labelZone: "eu-west-1a", labelSubzone: "rack-1"},
		"node-b": {labelRegion: "eu", labelZone: "eu-west-1b"},
	}
	tests := []struct {
		name   string
		in     serviceInputs
		want   string // the ServiceEntry spec, as protojson
		warned string // the field of the one warning expected, if any
	}{
		{
			name: "ClusterIP with ready endpoints of two slices, labels, locality and service account from pods and nodes",
			in: serviceInputs{
				service: service(nil),
				slices: []*discoveryv1.EndpointSlice{
					slice("demo-b", map[string]int32{"tcp-dubbo": 20881}, podEndpoint("10.1.0.2", "v2", new(true))),
					slice("demo-a", map[string]int32{"tcp-dubbo": 20881},
						podEndpoint("10.1.0.9", "v1", nil),                                              // ready unset means ready
						podEndpoint("10.1.0.3", "gone", new(false)),                                     // not ready: left out
						discoveryv1.Endpoint{Addresses: []string{"10.1.0.4"}, Zone: new("eu-west-1c")}), // no pod, no node: the zone alone
				},
				pods: pods, nodes: nodes,
			},
			want: `{"hosts":["demo.shop.svc.cluster.local"],"addresses":["10.0.0.7"],
				"ports":[{"number":20880,"name":"tcp-dubbo","targetPort":20881}],
				"location":"MESH_INTERNAL","resolution":"STATIC",
				"endpoints":[
				 {"address":"10.1.0.2","ports":{"tcp-dubbo":20881},"labels":{"app":"demo","istio-locality":"eu.west-1.rack-9","version":"v2"},"locality":"eu/west-1/rack-9","serviceAccount":"demo"},
				 {"address":"10.1.0.4","ports":{"tcp-dubbo":20881},"locality":"/eu-west-1c"},
				 {"address":"10.1.0.9","ports":{"tcp-dubbo":20881},"labels":{"app":"demo","version":"v1"},"locality":"eu/eu-west-1a/rack-1","serviceAccount":"demo"}]}`,
		},
		{
			name: "appProtocol, a named targetPort, an unnamed UDP port and exportTo",
			in: serviceInputs{
				service: service(func(s *corev1.Service) {
					s.Annotations = map[string]string{annotationExportTo: ". , istio-system"}
					s.Spec.Ports = []corev1.ServicePort{
						{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
						{Name: "rpc", Port: 8000, TargetPort: intstr.FromString("rpc"), AppProtocol: new("metaprotocol-brpc")},
					}
				}),
				slices: []*discoveryv1.EndpointSlice{slice("demo-a", map[string]int32{"rpc": 8123, "dns": 53}, podEndpoint("10.1.0.9", "v1", nil))},
				pods:   pods, nodes: nodes,
			},
			want: `{"hosts":["demo.shop.svc.cluster.local"],"addresses":["10.0.0.7"],
				"ports":[{"number":8000,"protocol":"metaprotocol-brpc","name":"rpc"}],
				"location":"MESH_INTERNAL","resolution":"STATIC",
				"endpoints":[{"address":"10.1.0.9","ports":{"dns":53,"rpc":8123},"labels":{"app":"demo","version":"v1"},"locality":"eu/eu-west-1a/rack-1","serviceAccount":"demo"}],
				"exportTo":[".","istio-system"]}`,
		},
		{
			name: "headless: no address",
			in: serviceInputs{service: service(func(s *corev1.Service) {
				s.Spec.ClusterIP, s.Spec.ClusterIPs = corev1.ClusterIPNone, []string{corev1.ClusterIPNone}
			})},
			want: `{"hosts":["demo.shop.svc.cluster.local"],"ports":[{"number":20880,"name":"tcp-dubbo","targetPort":20881}],
				"location":"MESH_INTERNAL","resolution":"STATIC"}`,
		},
		{
			name: "ExternalName: DNS to the external name",
			in: serviceInputs{service: service(func(s *corev1.Service) {
				s.Spec = corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "dubbo.example.com.",
					Ports: []corev1.ServicePort{{Name: "tcp-dubbo", Port: 20880}}}
			})},
			want: `{"hosts":["demo.shop.svc.cluster.local"],"ports":[{"number":20880,"name":"tcp-dubbo"}],
				"location":"MESH_EXTERNAL","resolution":"DNS","endpoints":[{"address":"dubbo.example.com"}]}`,
		},
		{
			name: "a meta-protocol port over UDP is not served, and said so",
			in: serviceInputs{service: service(func(s *corev1.Service) {
				s.Spec.Ports[0].Protocol = corev1.ProtocolUDP
			})},
			want:   `{"hosts":["demo.shop.svc.cluster.local"],"addresses":["10.0.0.7"],"location":"MESH_INTERNAL","resolution":"STATIC"}`,
			warned: "spec.ports[0].protocol",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conv := convertService(tt.in, "cluster.local", "kube")
			want := &networking.ServiceEntry{}
			if err := protojson.Unmarshal([]byte(tt.want), want); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(conv.entry.Spec, want) {
				got, _ := protojson.Marshal(conv.entry.Spec)
				t.Errorf("spec\n got %s\nwant %s", got, tt.want)
			}
			key := model.Key{Kind: KindService, Namespace: "shop", Name: "demo"}
			if conv.entry.Key() != key || conv.entry.Origin.File != "kube:Service shop/demo" || !conv.entry.Origin.Created.Equal(created) {
				t.Errorf("key %v, origin %v", conv.entry.Key(), conv.entry.Origin)
			}
			switch {
			case tt.warned == "" && len(conv.problems) > 0:
				t.Errorf("unexpected problems %v", conv.problems)
			case tt.warned != "" && (len(conv.problems) != 1 || conv.problems[0].Field != tt.warned ||
				conv.problems[0].Severity != model.SeverityWarning):
				t.Errorf("problems %v, want one warning at %s", conv.problems, tt.warned)
			}
		})
	}
}

func TestServiceFieldNamesTheServiceField(t *testing.T) {
	// The entry has the Service's ports 1 and 3 (0 and 2 are UDP).
	ports := []int{1, 3}
	tests := []struct{ entry, service string }{
		{"spec.ports[0]", "spec.ports[1]"},
		{"spec.ports[1].protocol", "spec.ports[3].appProtocol"},
		{"spec.ports[1].name", "spec.ports[3].name"},
		{"spec.addresses[0]", "spec.clusterIPs[0]"},
		{"spec.addresses", "spec.clusterIPs"},
		{"spec.hosts[0]", "metadata.name"},
		{"spec.endpoints[2].address", "endpoints"},
		{"spec.resolution", "spec.resolution"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := serviceField(tt.entry, ports); got != tt.service {
			t.Errorf("serviceField(%q) = %q, want %q", tt.entry, got, tt.service)
		}
	}
}
