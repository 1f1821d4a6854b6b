package envoyfilter

import (
	"bytes"
	"encoding/json"
	"fmt"

	clientv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	"sigs.k8s.io/yaml"
)

// MarshalYAML writes EnvoyFilters as a multi-document YAML stream, in order, as kubectl apply reads it.
// Fields an object to be applied does not carry (an empty status, a null creation time) are left out.
func MarshalYAML(filters []*clientv1alpha3.EnvoyFilter) ([]byte, error) {
	var out bytes.Buffer
	for i, ef := range filters {
		b, err := json.Marshal(ef)
		if err != nil {
			return nil, fmt.Errorf("EnvoyFilter %s/%s: %w", ef.Namespace, ef.Name, err)
		}
		var obj map[string]any
		if err := json.Unmarshal(b, &obj); err != nil {
			return nil, fmt.Errorf("EnvoyFilter %s/%s: %w", ef.Namespace, ef.Name, err)
		}
		if status, ok := obj["status"].(map[string]any); ok && len(status) == 0 {
			delete(obj, "status")
		}
		if meta, ok := obj["metadata"].(map[string]any); ok {
			if v, ok := meta["creationTimestamp"]; ok && v == nil {
				delete(meta, "creationTimestamp")
			}
		}
		y, err := yaml.Marshal(obj)
		if err != nil {
			return nil, fmt.Errorf("EnvoyFilter %s/%s: %w", ef.Namespace, ef.Name, err)
		}
		if i > 0 {
			out.WriteString("---\n")
		}
		out.Write(y)
	}
	return out.Bytes(), nil
}
