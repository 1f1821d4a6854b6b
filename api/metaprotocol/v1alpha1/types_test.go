package v1alpha1_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
)

// aerakiMetaRouter is the MetaRouter example of Aeraki's documentation, as users write it.
const aerakiMetaRouter = `
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: test-metaprotocol-route, namespace: meta-dubbo}
spec:
  hosts: [org.apache.dubbo.samples.basic.api.demoservice]
  routes:
  - name: v1
    match: {attributes: {method: {exact: sayHello}}}
    route: [{destination: {host: org.apache.dubbo.samples.basic.api.demoservice, subset: v1}, weight: 20},
            {destination: {host: org.apache.dubbo.samples.basic.api.demoservice, subset: v2}, weight: 80}]
    mirror: {host: org.apache.dubbo.samples.basic.api.demoservice, subset: v2}
    mirrorPercentage: {value: 50}
    requestMutation: [{key: foo, value: bar}]
  localRateLimit: {tokenBucket: {fillInterval: 60s, maxTokens: 5, tokensPerFill: 5}}
`

// aerakiGlobalRateLimit covers the fields the example above leaves out. Its durations are in the
// canonical form protobuf's encoders write, which is also the form they are re-encoded in.
const aerakiGlobalRateLimit = `
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: ratelimit, namespace: meta-thrift}
spec:
  hosts: [thrift-sample-server.meta-thrift.svc.cluster.local]
  gateways: [istio-system/ingressgateway]
  exportTo: ["."]
  routes:
  - name: all
    match: {attributes: {method: {regex: "*"}, interface: {prefix: org.apache}}}
    route: [{destination: {host: thrift-sample-server.meta-thrift.svc.cluster.local, port: {number: 9090}}}]
    responseMutation: [{key: served-by, value: meltemi}]
  localRateLimit:
    conditions:
    - match: {attributes: {method: {exact: sayHello}}}
      tokenBucket: {fillInterval: 0.500s, maxTokens: 10, tokensPerFill: 2}
  globalRateLimit:
    match: {attributes: {method: {exact: sayHello}}}
    domain: production
    requestTimeout: 1.250s
    denyOnFail: true
    rateLimitService: outbound|8081||rate-limit-server.meta-thrift.svc.cluster.local
    descriptors: [{property: method, descriptorKey: method}]
`

// meltemiTrafficPolicy is a MetaRouter with Meltemi's additions to MetaRoute, durations in the form they
// are re-encoded in.
const meltemiTrafficPolicy = `
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: policy, namespace: meta-dubbo}
spec:
  hosts: [org.apache.dubbo.samples.basic.api.demoservice]
  routes:
  - name: guarded
    route: [{destination: {host: org.apache.dubbo.samples.basic.api.demoservice}}]
    timeout: 2s
    retries: {attempts: 3, perTryTimeout: 0.500s, retryOn: "connect-failure,retriable-status-codes", retriableStatusCodes: [80]}
    fault:
      delay: {fixedDelay: 0.100s, percentage: {value: 10}}
      abort: {errorKind: no_healthy_upstream, percentage: {value: 5}}
    concurrencyLimit: {maxRequests: 100, perKey: method}
  - name: unguarded
    route: [{destination: {host: org.apache.dubbo.samples.basic.api.demoservice}}]
    timeout: 0s
    retries: {}
`

const aerakiApplicationProtocol = `
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: ApplicationProtocol
metadata: {name: brpc, namespace: istio-system}
spec: {protocol: brpc, codec: aeraki.meta_protocol.codec.brpc}
`

// sameJSON fails unless a and b hold the same JSON value, whatever their formatting and key order.
func sameJSON(t *testing.T, a, b []byte) {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(va, vb) {
		t.Errorf("JSON differs:\n got %s\nwant %s", b, a)
	}
}

func TestAerakiManifestsRoundTrip(t *testing.T) {
	tests := []struct {
		name     string
		manifest string
		obj      any
	}{
		{"MetaRouter example", aerakiMetaRouter, &v1alpha1.MetaRouter{}},
		{"MetaRouter with rate limits", aerakiGlobalRateLimit, &v1alpha1.MetaRouter{}},
		{"MetaRouter with Meltemi's traffic policy", meltemiTrafficPolicy, &v1alpha1.MetaRouter{}},
		{"ApplicationProtocol", aerakiApplicationProtocol, &v1alpha1.ApplicationProtocol{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := yaml.UnmarshalStrict([]byte(tt.manifest), tt.obj); err != nil {
				t.Fatalf("decode: %v", err)
			}
			want, err := yaml.YAMLToJSON([]byte(tt.manifest))
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.Marshal(tt.obj)
			if err != nil {
				t.Fatal(err)
			}
			sameJSON(t, want, got)
		})
	}
}

func TestMetaRouterExampleFields(t *testing.T) {
	var mr v1alpha1.MetaRouter
	if err := yaml.UnmarshalStrict([]byte(aerakiMetaRouter), &mr); err != nil {
		t.Fatal(err)
	}
	r := mr.Spec.Routes[0]
	checks := []struct {
		field     string
		got, want any
	}{
		{"kind", mr.Kind, "MetaRouter"},
		{"metadata.namespace", mr.Namespace, "meta-dubbo"},
		{"spec.hosts[0]", mr.Spec.Hosts[0], "org.apache.dubbo.samples.basic.api.demoservice"},
		{"routes[0].match.attributes[method].exact", *r.Match.Attributes["method"].Exact, "sayHello"},
		{"routes[0].route[1].destination.subset", r.Route[1].Destination.Subset, "v2"},
		{"routes[0].route[1].weight", r.Route[1].Weight, uint32(80)},
		{"routes[0].mirror.subset", r.Mirror.Subset, "v2"},
		{"routes[0].mirrorPercentage.value", r.MirrorPercentage.Value, 50.0},
		{"routes[0].requestMutation[0].value", r.RequestMutation[0].Value, "bar"},
		{"localRateLimit.tokenBucket.fillInterval", mr.Spec.LocalRateLimit.TokenBucket.FillInterval.Duration, 60 * time.Second},
		{"localRateLimit.tokenBucket.maxTokens", mr.Spec.LocalRateLimit.TokenBucket.MaxTokens, uint32(5)},
		{"localRateLimit.tokenBucket.tokensPerFill", *mr.Spec.LocalRateLimit.TokenBucket.TokensPerFill, uint32(5)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.field, c.got, c.want)
		}
	}
}

func TestUnknownFieldsAreErrors(t *testing.T) {
	for _, typo := range []string{"route:", "fillInterval:", "exact:"} {
		bad := strings.Replace(aerakiMetaRouter, typo, "x"+typo, 1)
		var mr v1alpha1.MetaRouter
		err := yaml.UnmarshalStrict([]byte(bad), &mr)
		if err == nil || !strings.Contains(err.Error(), "x"+strings.TrimSuffix(typo, ":")) {
			t.Errorf("misspelt %q: err = %v, want an unknown-field error naming it", typo, err)
		}
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		out  string // protobuf's JSON form
	}{
		{`"60s"`, 60 * time.Second, `"60s"`},
		{`"0.5s"`, 500 * time.Millisecond, `"0.500s"`},
		{`"1.000001s"`, time.Second + time.Microsecond, `"1.000001s"`},
		{`"0.000000001s"`, time.Nanosecond, `"0.000000001s"`},
		{`"-1.5s"`, -1500 * time.Millisecond, `"-1.500s"`},
		{`"1m"`, time.Minute, `"60s"`}, // Go's form is read too
		{`"250ms"`, 250 * time.Millisecond, `"0.250s"`},
		{`"0s"`, 0, `"0s"`},
	}
	for _, tt := range tests {
		var d v1alpha1.Duration
		if err := json.Unmarshal([]byte(tt.in), &d); err != nil {
			t.Errorf("decode %s: %v", tt.in, err)
			continue
		}
		if d.Duration != tt.want {
			t.Errorf("decode %s = %v, want %v", tt.in, d.Duration, tt.want)
		}
		out, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != tt.out {
			t.Errorf("encode %v = %s, want %s", tt.want, out, tt.out)
		}
	}
	for _, bad := range []string{`60`, `"60"`, `"sixty seconds"`, `{}`} {
		var d v1alpha1.Duration
		if err := json.Unmarshal([]byte(bad), &d); err == nil {
			t.Errorf("decode %s: no error", bad)
		}
	}
}

func TestAddToScheme(t *testing.T) {
	s := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	for kind, obj := range map[string]runtime.Object{
		"MetaRouter":              &v1alpha1.MetaRouter{},
		"MetaRouterList":          &v1alpha1.MetaRouterList{},
		"ApplicationProtocol":     &v1alpha1.ApplicationProtocol{},
		"ApplicationProtocolList": &v1alpha1.ApplicationProtocolList{},
	} {
		gvks, _, err := s.ObjectKinds(obj)
		if err != nil {
			t.Errorf("%s: %v", kind, err)
			continue
		}
		if want := v1alpha1.GroupVersion.WithKind(kind); gvks[0] != want {
			t.Errorf("%T registered as %v, want %v", obj, gvks[0], want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func fullMatch() *v1alpha1.MetaRouteMatch {
	return &v1alpha1.MetaRouteMatch{Attributes: map[string]v1alpha1.StringMatch{
		"method": {Exact: ptr("sayHello"), Prefix: ptr("say"), Regex: ptr("say.*")},
	}}
}

func fullDestination() *v1alpha1.Destination {
	return &v1alpha1.Destination{Host: "org.example.demo", Subset: "v1", Port: &v1alpha1.PortSelector{Number: 20880}}
}

func fullTokenBucket() *v1alpha1.TokenBucket {
	return &v1alpha1.TokenBucket{MaxTokens: 5, TokensPerFill: ptr[uint32](5), FillInterval: v1alpha1.Duration{Duration: time.Minute}}
}

func fullStatus() v1alpha1.Status {
	return v1alpha1.Status{ObservedGeneration: 3, Conditions: []metav1.Condition{{
		Type: "Accepted", Status: metav1.ConditionTrue, ObservedGeneration: 3,
		LastTransitionTime: metav1.Unix(1700000000, 0), Reason: "Valid", Message: "ok",
	}}}
}

func fullObjectMeta() metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name: "demo", Namespace: "default", Generation: 3,
		Labels: map[string]string{"app": "demo"}, Annotations: map[string]string{"note": "x"},
	}
}

func fullMetaRouter() *v1alpha1.MetaRouter {
	return &v1alpha1.MetaRouter{
		TypeMeta:   metav1.TypeMeta{APIVersion: "metaprotocol.aeraki.io/v1alpha1", Kind: "MetaRouter"},
		ObjectMeta: fullObjectMeta(),
		Spec: v1alpha1.MetaRouterSpec{
			Hosts:    []string{"org.example.demo"},
			Gateways: []string{"istio-system/gw"},
			Routes: []v1alpha1.MetaRoute{{
				Name:             "v1",
				Match:            fullMatch(),
				Route:            []v1alpha1.MetaRouteDestination{{Destination: *fullDestination(), Weight: 100}},
				Mirror:           fullDestination(),
				MirrorPercentage: &v1alpha1.Percent{Value: 50},
				RequestMutation:  []v1alpha1.KeyValue{{Key: "foo", Value: "bar"}},
				ResponseMutation: []v1alpha1.KeyValue{{Key: "baz", Value: "qux"}},
				Timeout:          &v1alpha1.Duration{Duration: 2 * time.Second},
				Retries: &v1alpha1.RetryPolicy{Attempts: 3, PerTryTimeout: &v1alpha1.Duration{Duration: time.Second / 2},
					RetryOn: "connect-failure,retriable-status-codes", RetriableStatusCodes: []int32{80}},
				Fault: &v1alpha1.FaultInjection{
					Delay: &v1alpha1.FaultDelay{FixedDelay: v1alpha1.Duration{Duration: 100 * time.Millisecond},
						Percentage: &v1alpha1.Percent{Value: 10}},
					Abort: &v1alpha1.FaultAbort{ErrorKind: "no_healthy_upstream", Percentage: &v1alpha1.Percent{Value: 5}},
				},
				ConcurrencyLimit: &v1alpha1.ConcurrencyLimit{MaxRequests: 100, PerKey: "method"},
			}},
			LocalRateLimit: &v1alpha1.LocalRateLimit{
				TokenBucket: fullTokenBucket(),
				Conditions:  []v1alpha1.LocalRateLimitCondition{{Match: *fullMatch(), TokenBucket: *fullTokenBucket()}},
			},
			GlobalRateLimit: &v1alpha1.GlobalRateLimit{
				Match:            *fullMatch(),
				Domain:           "production",
				RequestTimeout:   &v1alpha1.Duration{Duration: time.Second},
				DenyOnFail:       true,
				RateLimitService: "outbound|8081||ratelimit",
				Descriptors:      []v1alpha1.GlobalRateLimitDescriptor{{Property: "method", DescriptorKey: "method"}},
			},
			ExportTo: []string{"."},
		},
		Status: fullStatus(),
	}
}

func fullApplicationProtocol() *v1alpha1.ApplicationProtocol {
	return &v1alpha1.ApplicationProtocol{
		TypeMeta:   metav1.TypeMeta{APIVersion: "metaprotocol.aeraki.io/v1alpha1", Kind: "ApplicationProtocol"},
		ObjectMeta: fullObjectMeta(),
		Spec:       v1alpha1.ApplicationProtocolSpec{Protocol: "brpc", Codec: "aeraki.meta_protocol.codec.brpc"},
		Status:     fullStatus(),
	}
}

const ourPkg = "github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"

// requirePopulated fails on any zero field of this package's types, so that a field added later
// without being added to the fixtures above is noticed rather than silently left out of the
// DeepCopy test.
func requirePopulated(t *testing.T, path string, v reflect.Value) {
	t.Helper()
	if v.IsZero() {
		t.Errorf("%s is not populated in the test fixture", path)
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		requirePopulated(t, path, v.Elem())
	case reflect.Struct:
		if v.Type().PkgPath() != ourPkg {
			return
		}
		for i := 0; i < v.NumField(); i++ {
			requirePopulated(t, path+"."+v.Type().Field(i).Name, v.Field(i))
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			requirePopulated(t, path+"[]", v.Index(i))
		}
	case reflect.Map:
		for _, k := range v.MapKeys() {
			requirePopulated(t, path+"[]", v.MapIndex(k))
		}
	}
}

// mutate changes every value reachable from v that can be changed in place: strings, numbers,
// booleans, pointed-to values, slice elements and map entries.
func mutate(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			mutate(v.Elem())
		}
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if f := v.Field(i); f.CanSet() {
				mutate(f)
			}
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			mutate(v.Index(i))
		}
	case reflect.Map:
		for _, k := range v.MapKeys() {
			e := reflect.New(v.Type().Elem()).Elem()
			e.Set(v.MapIndex(k))
			mutate(e)
			v.SetMapIndex(k, e)
		}
	case reflect.String:
		v.SetString(v.String() + "-changed")
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(v.Int() + 1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(v.Uint() + 1)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(v.Float() + 1)
	case reflect.Bool:
		v.SetBool(!v.Bool())
	}
}

func TestDeepCopyIsIndependent(t *testing.T) {
	tests := []struct {
		name string
		obj  runtime.Object
	}{
		{"MetaRouter", fullMetaRouter()},
		{"ApplicationProtocol", fullApplicationProtocol()},
		{"MetaRouterList", &v1alpha1.MetaRouterList{
			TypeMeta: metav1.TypeMeta{APIVersion: "metaprotocol.aeraki.io/v1alpha1", Kind: "MetaRouterList"},
			ListMeta: metav1.ListMeta{ResourceVersion: "42"},
			Items:    []v1alpha1.MetaRouter{*fullMetaRouter()},
		}},
		{"ApplicationProtocolList", &v1alpha1.ApplicationProtocolList{
			TypeMeta: metav1.TypeMeta{APIVersion: "metaprotocol.aeraki.io/v1alpha1", Kind: "ApplicationProtocolList"},
			ListMeta: metav1.ListMeta{ResourceVersion: "42"},
			Items:    []v1alpha1.ApplicationProtocol{*fullApplicationProtocol()},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requirePopulated(t, tt.name, reflect.ValueOf(tt.obj))
			before, err := json.Marshal(tt.obj)
			if err != nil {
				t.Fatal(err)
			}
			cp := tt.obj.DeepCopyObject()
			if !reflect.DeepEqual(cp, tt.obj) {
				t.Fatalf("copy differs from the original")
			}
			mutate(reflect.ValueOf(cp))
			after, err := json.Marshal(tt.obj)
			if err != nil {
				t.Fatal(err)
			}
			if string(before) != string(after) {
				t.Errorf("changing the copy changed the original:\nbefore %s\n after %s", before, after)
			}
			changed, err := json.Marshal(cp)
			if err != nil {
				t.Fatal(err)
			}
			if string(changed) == string(before) {
				t.Errorf("mutate changed nothing; the test proves nothing")
			}
		})
	}
}
