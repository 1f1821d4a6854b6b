package v1alpha1_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/meltemi-mesh/meltemi/api/dubbo/v1alpha1"
)

// aerakiPolicy is the example of Aeraki's documentation, with the negative lists added.
const aerakiPolicy = `
apiVersion: dubbo.aeraki.io/v1alpha1
kind: DubboAuthorizationPolicy
metadata: {name: demo, namespace: istio-system}
spec:
  action: DENY
  rules:
  - from:
    - source: {principals: [cluster.local/ns/dubbo/sa/dubbo-consumer], notPrincipals: [x], namespaces: [dubbo], notNamespaces: [dev]}
    to:
    - operation: {interfaces: [org.apache.dubbo.samples.basic.api.DemoService], notInterfaces: [org.example.Internal], methods: [sayHello], notMethods: [sayBye]}
`

func TestAerakiManifestRoundTrips(t *testing.T) {
	var p v1alpha1.DubboAuthorizationPolicy
	if err := yaml.UnmarshalStrict([]byte(aerakiPolicy), &p); err != nil {
		t.Fatal(err)
	}
	if p.Spec.Action != v1alpha1.ActionDeny || p.Spec.Rules[0].To[0].Operation.NotMethods[0] != "sayBye" {
		t.Errorf("spec %+v", p.Spec)
	}
	got, err := json.Marshal(&p)
	if err != nil {
		t.Fatal(err)
	}
	want, err := yaml.YAMLToJSON([]byte(aerakiPolicy))
	if err != nil {
		t.Fatal(err)
	}
	var g, w any
	json.Unmarshal(got, &g)
	json.Unmarshal(want, &w)
	if !reflect.DeepEqual(g, w) {
		t.Errorf("re-encoded\n got %s\nwant %s", got, want)
	}
	copied := p.DeepCopy()
	copied.Spec.Rules[0].From[0].Source.Principals[0] = "changed"
	if p.Spec.Rules[0].From[0].Source.Principals[0] == "changed" {
		t.Error("DeepCopy shares the principals")
	}
}
