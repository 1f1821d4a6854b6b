package xds

import (
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meltemi-mesh/meltemi/proxy"
)

// Mode is how the proxy is deployed; the controller translates per mode.
type Mode string

// Deployment modes.
const (
	ModeLocal   Mode = "local"
	ModeSidecar Mode = "sidecar"
	ModeGateway Mode = "gateway"
)

// Node metadata keys. All but MODE are Istio's names, so an Istio-aware controller reads them as it would
// from an Envoy sidecar.
const (
	MetadataMode         = "MODE"
	MetadataNamespace    = "NAMESPACE"
	MetadataWorkloadName = "WORKLOAD_NAME"
	MetadataLabels       = "LABELS"
)

// Node is who the proxy tells the controller it is.
type Node struct {
	// ID identifies the proxy to the controller; required.
	ID string
	// Cluster is the xDS node cluster (Istio puts the workload's service cluster here).
	Cluster string
	// Mode is local, sidecar or gateway; required.
	Mode Mode
	// Namespace is the workload's namespace, if any.
	Namespace string
	// WorkloadName is the workload's name (Deployment, ...), if any.
	WorkloadName string
	// Labels are the workload's labels; app, version and Istio's canonical labels feed the source_* metric
	// labels.
	Labels map[string]string
	// Locality is where the proxy runs, "region/zone/subzone" as Istio writes it (zone and subzone may be
	// left out), sent as the xDS node's locality: the controller puts nearer endpoints first for it.
	Locality string
}

// ParseLocality splits "region/zone/subzone" (zone and subzone optional) into an xDS locality; nil for "".
func ParseLocality(s string) (*corev3.Locality, error) {
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, "/")
	if len(parts) > 3 {
		return nil, fmt.Errorf("locality %q: at most region/zone/subzone", s)
	}
	if parts[0] == "" {
		return nil, fmt.Errorf("locality %q: the region is required", s)
	}
	l := &corev3.Locality{Region: parts[0]}
	if len(parts) > 1 {
		l.Zone = parts[1]
	}
	if len(parts) > 2 {
		l.SubZone = parts[2]
	}
	return l, nil
}

func (n Node) validate() error {
	if n.ID == "" {
		return fmt.Errorf("node id: required")
	}
	if _, err := ParseLocality(n.Locality); err != nil {
		return fmt.Errorf("node %w", err)
	}
	switch n.Mode {
	case ModeLocal, ModeSidecar, ModeGateway:
		return nil
	}
	return fmt.Errorf("node mode: %q is not one of local, sidecar, gateway", n.Mode)
}

// proto returns the xDS node sent on the first request of each stream.
func (n Node) proto() (*corev3.Node, error) {
	md := map[string]any{MetadataMode: string(n.Mode)}
	if n.Namespace != "" {
		md[MetadataNamespace] = n.Namespace
	}
	if n.WorkloadName != "" {
		md[MetadataWorkloadName] = n.WorkloadName
	}
	if len(n.Labels) > 0 {
		labels := make(map[string]any, len(n.Labels))
		for k, v := range n.Labels {
			labels[k] = v
		}
		md[MetadataLabels] = labels
	}
	st, err := structpb.NewStruct(md)
	if err != nil {
		return nil, fmt.Errorf("node metadata: %w", err)
	}
	locality, err := ParseLocality(n.Locality)
	if err != nil {
		return nil, fmt.Errorf("node %w", err)
	}
	return &corev3.Node{Id: n.ID, Cluster: n.Cluster, Metadata: st, Locality: locality, UserAgentName: "meltemi"}, nil
}

// proxyNode is the identity the proxy's metrics report as the source.
func (n Node) proxyNode() proxy.Node {
	return proxy.Node{
		ID:                n.ID,
		Workload:          n.WorkloadName,
		Namespace:         n.Namespace,
		App:               n.Labels["app"],
		Version:           n.Labels["version"],
		CanonicalService:  n.Labels["service.istio.io/canonical-name"],
		CanonicalRevision: n.Labels["service.istio.io/canonical-revision"],
	}
}
