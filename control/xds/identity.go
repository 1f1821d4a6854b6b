package xds

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meltemi-mesh/meltemi/control/translate"
)

// Node metadata keys. All but MODE are Istio's names, which Envoy sidecars and Aeraki's data plane send.
const (
	metadataMode      = "MODE"
	metadataNamespace = "NAMESPACE"
	metadataWorkload  = "WORKLOAD_NAME"
	metadataLabels    = "LABELS"
)

// parseNode reads a proxy's identity from its xDS node. The mode defaults to local, the one-machine mesh.
// When the metadata lacks MODE or NAMESPACE, an Istio-style node id (type~ip~pod.namespace~domain) fills
// them in, so an Istio or Aeraki proxy that does not know our key is still placed correctly.
func parseNode(n *corev3.Node) (translate.Node, error) {
	out := translate.Node{ID: n.GetId()}
	if out.ID == "" {
		return out, fmt.Errorf("node id: required")
	}
	md := n.GetMetadata().GetFields()
	str := func(key string) (string, error) {
		v, ok := md[key]
		if !ok {
			return "", nil
		}
		s, ok := v.GetKind().(*structpb.Value_StringValue)
		if !ok {
			return "", fmt.Errorf("node %q: metadata %s: a string is required", out.ID, key)
		}
		return s.StringValue, nil
	}
	mode, err := str(metadataMode)
	if err != nil {
		return out, err
	}
	if out.Namespace, err = str(metadataNamespace); err != nil {
		return out, err
	}
	if out.Workload, err = str(metadataWorkload); err != nil {
		return out, err
	}
	if v, ok := md[metadataLabels]; ok {
		st := v.GetStructValue()
		if st == nil {
			return out, fmt.Errorf("node %q: metadata %s: a map of strings is required", out.ID, metadataLabels)
		}
		out.Labels = make(map[string]string, len(st.GetFields()))
		for k, lv := range st.GetFields() {
			s, ok := lv.GetKind().(*structpb.Value_StringValue)
			if !ok {
				return out, fmt.Errorf("node %q: metadata %s.%s: a string is required", out.ID, metadataLabels, k)
			}
			out.Labels[k] = s.StringValue
		}
	}

	if l := n.GetLocality(); l != nil {
		out.Locality = translate.LocalityString(l.GetRegion(), l.GetZone(), l.GetSubZone())
	}

	istioType, istioNamespace := parseIstioID(out.ID)
	if out.Namespace == "" {
		out.Namespace = istioNamespace
	}
	switch strings.ToLower(mode) {
	case "":
		switch istioType {
		case "sidecar":
			out.Mode = translate.Sidecar
		case "router":
			out.Mode = translate.Gateway
		default:
			out.Mode = translate.Local
		}
	case string(translate.Local):
		out.Mode = translate.Local
	case string(translate.Sidecar):
		out.Mode = translate.Sidecar
	case string(translate.Gateway):
		out.Mode = translate.Gateway
	default:
		return out, fmt.Errorf("node %q: metadata %s: %q is not one of local, sidecar, gateway", out.ID, metadataMode, mode)
	}
	return out, nil
}

// parseIstioID splits an Istio node id, type~ip~pod.namespace~namespace.svc.cluster.local, into its type and
// namespace (the first label of the domain, as pod names may hold dots); empty strings for another form.
func parseIstioID(id string) (typ, namespace string) {
	parts := strings.Split(id, "~")
	if len(parts) != 4 {
		return "", ""
	}
	namespace, _, _ = strings.Cut(parts[3], ".")
	return parts[0], namespace
}

// shareKey is what decides a node's translation, apart from its id: nodes with equal keys are translated
// once per model version.
func shareKey(n translate.Node) string {
	var b []byte
	add := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	add(string(n.Mode))
	add(n.Namespace)
	add(n.Workload)
	add(n.Locality)
	for _, k := range slices.Sorted(maps.Keys(n.Labels)) {
		add(k)
		add(n.Labels[k])
	}
	return string(b)
}
