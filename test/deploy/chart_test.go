package deploy_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3" // the bootstrap's protocol options
	"google.golang.org/protobuf/encoding/protojson"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/meltemi-mesh/meltemi/test/deploy"
)

const (
	chartDir     = "../../deploy/helm/meltemi"
	manifestFile = "../../deploy/manifests/meltemi.yaml"
	apiCRDs      = "../../api/crds"
)

func render(t *testing.T, values map[string]any) *deploy.Rendering {
	t.Helper()
	r, err := deploy.Render(chartDir, deploy.Options{Values: values})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// as converts a rendered object into its typed form, failing on fields the type does not have.
func as[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	if u == nil {
		t.Fatal("object not rendered")
	}
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, out, true); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
	return out
}

func TestManifestsUpToDate(t *testing.T) {
	want := render(t, nil).Manifest(deploy.DefaultNamespace)
	got, err := os.ReadFile(manifestFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is not what the chart renders: run make manifests and review the diff", manifestFile)
	}
}

// The chart carries the CRDs as generated under api/crds (Helm reads them from the chart's own folder).
func TestCRDsMatchAPI(t *testing.T) {
	api, err := filepath.Glob(filepath.Join(apiCRDs, "*.yaml"))
	if err != nil || len(api) == 0 {
		t.Fatalf("no CRDs under %s: %v", apiCRDs, err)
	}
	chart, _ := filepath.Glob(filepath.Join(chartDir, "crds", "*.yaml"))
	var names []string
	for _, f := range api {
		names = append(names, filepath.Base(f))
		a, _ := os.ReadFile(f)
		c, err := os.ReadFile(filepath.Join(chartDir, "crds", filepath.Base(f)))
		if err != nil || !bytes.Equal(a, c) {
			t.Errorf("crds/%s differs from %s: run make manifests", filepath.Base(f), f)
		}
	}
	for _, f := range chart {
		if !slices.Contains(names, filepath.Base(f)) {
			t.Errorf("crds/%s is not under %s: run make manifests", filepath.Base(f), apiCRDs)
		}
	}
}

func controller(t *testing.T, r *deploy.Rendering) (*appsv1.Deployment, corev1.Container) {
	t.Helper()
	d := as[appsv1.Deployment](t, r.Find("Deployment", "meltemi"))
	if len(d.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("containers %v", d.Spec.Template.Spec.Containers)
	}
	return d, d.Spec.Template.Spec.Containers[0]
}

func TestDeploymentDefaults(t *testing.T) {
	r := render(t, nil)
	d, c := controller(t, r)
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("replicas %v", d.Spec.Replicas)
	}
	for _, arg := range []string{"controller", "--kube", "--leader-elect", "--xds=:15010", "--admin=:15014", "--webhook=:15017"} {
		if !slices.Contains(c.Args, arg) {
			t.Errorf("args %v lack %s", c.Args, arg)
		}
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/ready" || p.HTTPGet.Port.StrVal != "http-monitoring" {
		t.Errorf("readiness probe %+v", p)
	}
	if c.LivenessProbe == nil {
		t.Error("no liveness probe")
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v", c.Resources)
	}
	pod := d.Spec.Template.Spec
	sc := c.SecurityContext
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot ||
		pod.SecurityContext.RunAsUser == nil || *pod.SecurityContext.RunAsUser == 0 ||
		sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Errorf("security context: pod %+v, container %+v", pod.SecurityContext, sc)
	}
	if pod.ServiceAccountName != "meltemi" || r.Find("ServiceAccount", "meltemi") == nil {
		t.Errorf("service account %q", pod.ServiceAccountName)
	}
	if d.Spec.Template.Labels["sidecar.istio.io/inject"] != "false" {
		t.Errorf("pod labels %v: the control plane must not get a sidecar", d.Spec.Template.Labels)
	}
	pdb := r.Find("PodDisruptionBudget", "meltemi")
	if pdb == nil {
		t.Fatal("no PodDisruptionBudget")
	}
	if v, _, _ := unstructured.NestedFieldNoCopy(pdb.Object, "spec", "minAvailable"); v != int64(1) {
		t.Errorf("minAvailable %v", v)
	}
	svc := as[corev1.Service](t, r.Find("Service", "meltemi"))
	ports := map[string]int32{}
	for _, p := range svc.Spec.Ports {
		ports[p.Name] = p.Port
		if p.TargetPort.StrVal != p.Name {
			t.Errorf("service port %s targets %v, not the container port of its name", p.Name, p.TargetPort)
		}
	}
	if want := map[string]int32{"grpc-xds": 15010, "https-webhook": 443, "http-monitoring": 15014}; !mapsEqual(ports, want) {
		t.Errorf("service ports %v, want %v", ports, want)
	}
	for _, kind := range []string{"ValidatingWebhookConfiguration", "Secret"} {
		if !slices.Contains(r.Kinds(), kind) {
			t.Errorf("no %s by default", kind)
		}
	}
	for _, kind := range []string{"MutatingWebhookConfiguration", "ConfigMap", "EnvoyFilter"} {
		if slices.Contains(r.Kinds(), kind) {
			t.Errorf("%s rendered by default", kind)
		}
	}
}

func mapsEqual[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// rules returns the rules of the ClusterRole and of the Role.
func rules(t *testing.T, r *deploy.Rendering) (cluster, namespaced []rbacv1.PolicyRule) {
	t.Helper()
	return as[rbacv1.ClusterRole](t, r.Find("ClusterRole", "meltemi")).Rules, as[rbacv1.Role](t, r.Find("Role", "meltemi")).Rules
}

// allows reports whether rules grant verb on group/resource (named name, if not empty).
func allows(rules []rbacv1.PolicyRule, verb, group, resource, name string) bool {
	for _, r := range rules {
		if slices.Contains(r.Verbs, verb) && slices.Contains(r.APIGroups, group) && slices.Contains(r.Resources, resource) &&
			(len(r.ResourceNames) == 0 || slices.Contains(r.ResourceNames, name)) {
			return true
		}
	}
	return false
}

func TestRBAC(t *testing.T) {
	for _, c := range []struct {
		name   string
		values map[string]any
		// allowed and denied: "verb group/resource[/name]", cluster-wide, and in the release's namespace.
		cluster, denied, namespaced []string
	}{
		{
			name: "defaults",
			cluster: []string{"watch /services", "list /pods", "watch /nodes", "watch /namespaces", "watch discovery.k8s.io/endpointslices",
				"watch networking.istio.io/serviceentries", "watch networking.istio.io/workloadentries",
				"watch networking.istio.io/destinationrules", "watch metaprotocol.aeraki.io/metarouters",
				"watch metaprotocol.aeraki.io/applicationprotocols", "watch redis.aeraki.io/redisservices",
				"watch dubbo.aeraki.io/dubboauthorizationpolicies", "update metaprotocol.aeraki.io/metarouters/status",
				"patch metaprotocol.aeraki.io/applicationprotocols/status",
				"patch admissionregistration.k8s.io/validatingwebhookconfigurations/meltemi-validation"},
			denied: []string{"create networking.istio.io/envoyfilters", "update networking.istio.io/serviceentries",
				"update metaprotocol.aeraki.io/metarouters", "patch admissionregistration.k8s.io/validatingwebhookconfigurations/istio-validator",
				"patch admissionregistration.k8s.io/mutatingwebhookconfigurations/meltemi-injection", "get /secrets", "list /configmaps",
				"create /pods", "get /services", "update /nodes"},
			namespaced: []string{"create coordination.k8s.io/leases", "update coordination.k8s.io/leases", "create /events",
				"get /secrets/meltemi-webhook-tls", "update /secrets/meltemi-webhook-tls"},
		},
		{
			name:   "compat and injection",
			values: map[string]any{"compat": map[string]any{"envoyFilters": true}, "injection": map[string]any{"enabled": true}},
			cluster: []string{"create networking.istio.io/envoyfilters", "delete networking.istio.io/envoyfilters",
				"patch admissionregistration.k8s.io/mutatingwebhookconfigurations/meltemi-injection"},
			denied: []string{"patch admissionregistration.k8s.io/mutatingwebhookconfigurations/istio-sidecar-injector",
				"create networking.istio.io/virtualservices"},
		},
		{
			name:   "one replica, no webhooks",
			values: map[string]any{"replicas": 1, "leaderElection": map[string]any{"enabled": false}, "webhook": map[string]any{"enabled": false}},
			denied: []string{"patch admissionregistration.k8s.io/validatingwebhookconfigurations/meltemi-validation"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := render(t, c.values)
			cluster, namespaced := rules(t, r)
			check := func(rules []rbacv1.PolicyRule, item string, want bool) {
				verb, rest, _ := strings.Cut(item, " ")
				group, resource, _ := strings.Cut(rest, "/")
				name := ""
				if sub, n, ok := strings.Cut(resource, "/"); ok && n != "status" {
					resource, name = sub, n
				}
				if got := allows(rules, verb, group, resource, name); got != want {
					t.Errorf("%s: allowed %v, want %v", item, got, want)
				}
			}
			for _, item := range c.cluster {
				check(cluster, item, true)
			}
			for _, item := range c.denied {
				check(cluster, item, false)
				check(namespaced, item, false)
			}
			for _, item := range c.namespaced {
				check(namespaced, item, true)
				check(cluster, item, false)
			}
			for _, rule := range slices.Concat(cluster, namespaced) {
				for _, s := range slices.Concat(rule.Verbs, rule.APIGroups, rule.Resources) {
					if s == "*" {
						t.Errorf("wildcard in %+v", rule)
					}
				}
				if slices.Contains(rule.Resources, "secrets") && len(rule.ResourceNames) == 0 {
					t.Errorf("secrets not limited by name: %+v", rule)
				}
			}
			if c.name == "one replica, no webhooks" && (len(namespaced) != 0 || r.Find("Secret", "meltemi-webhook-tls") != nil ||
				r.Find("PodDisruptionBudget", "meltemi") != nil) {
				t.Errorf("role %v, a Secret or a PodDisruptionBudget without leader election and webhooks", namespaced)
			}
		})
	}
}

// Every CRD the chart installs is readable by the controller, and so is its status when it has one.
func TestRBACCoversCRDs(t *testing.T) {
	r := render(t, nil)
	cluster, _ := rules(t, r)
	if len(r.CRDs) == 0 {
		t.Fatal("no CRDs in the chart")
	}
	for _, d := range r.CRDs {
		crd := as[apiextensionsv1.CustomResourceDefinition](t, d.Object)
		for _, verb := range []string{"list", "watch"} {
			if !allows(cluster, verb, crd.Spec.Group, crd.Spec.Names.Plural, "") {
				t.Errorf("%s: no %s", crd.Name, verb)
			}
		}
		for _, v := range crd.Spec.Versions {
			if v.Subresources != nil && v.Subresources.Status != nil && !allows(cluster, "update", crd.Spec.Group, crd.Spec.Names.Plural+"/status", "") {
				t.Errorf("%s: status not writable", crd.Name)
			}
		}
	}
}

func TestOptionalParts(t *testing.T) {
	r := render(t, map[string]any{
		"compat": map[string]any{"envoyFilters": true, "xdsCluster": "aeraki-xds", "rootNamespace": "istio-config",
			"bootstrapNamespaces": []any{"shop", "team-a"}},
		"injection": map[string]any{"enabled": true, "namespaceLabel": "mesh-injection"},
		"webhook":   map[string]any{"failurePolicy": "Ignore"},
		"extraArgs": []any{"--log-format=text"},
	})
	_, c := controller(t, r)
	for _, arg := range []string{"--compat-envoyfilters", "--compat-xds-cluster=aeraki-xds", "--compat-root-namespace=istio-config",
		"--mutating-webhook-configuration=meltemi-injection", "--log-format=text"} {
		if !slices.Contains(c.Args, arg) {
			t.Errorf("args %v lack %s", c.Args, arg)
		}
	}
	mw := r.Find("MutatingWebhookConfiguration", "meltemi-injection")
	if mw == nil {
		t.Fatal("no injection webhook")
	}
	sel, _, _ := unstructured.NestedStringMap(mw.Object["webhooks"].([]any)[0].(map[string]any), "namespaceSelector", "matchLabels")
	if sel["mesh-injection"] != "enabled" {
		t.Errorf("namespace selector %v", sel)
	}
	vw := r.Find("ValidatingWebhookConfiguration", "meltemi-validation")
	if fp := vw.Object["webhooks"].([]any)[0].(map[string]any)["failurePolicy"]; fp != "Ignore" {
		t.Errorf("failurePolicy %v", fp)
	}
	var namespaces []string
	for _, d := range r.Objects {
		if d.Object.GetKind() != "ConfigMap" {
			continue
		}
		namespaces = append(namespaces, d.Object.GetNamespace())
		cm := as[corev1.ConfigMap](t, d.Object)
		b := &bootstrapv3.Bootstrap{}
		if err := protojson.Unmarshal([]byte(cm.Data["custom_bootstrap.json"]), b); err != nil {
			t.Fatalf("%s/%s: not an Envoy bootstrap: %v", cm.Namespace, cm.Name, err)
		}
		if err := b.ValidateAll(); err != nil {
			t.Errorf("%s/%s: %v", cm.Namespace, cm.Name, err)
		}
		cl := b.GetStaticResources().GetClusters()
		if len(cl) != 1 || cl[0].GetName() != "aeraki-xds" ||
			cl[0].GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetAddress() != "meltemi.meltemi-system.svc" {
			t.Errorf("%s/%s: clusters %v", cm.Namespace, cm.Name, cl)
		}
	}
	if !slices.Equal(namespaces, []string{"shop", "team-a"}) {
		t.Errorf("bootstrap ConfigMaps in %v", namespaces)
	}
}

// Values the chart cannot honour are refused, naming the value (Helm names those its schema refuses by
// their JSON pointer).
func TestBadValues(t *testing.T) {
	for _, c := range []struct {
		values map[string]any
		want   string
	}{
		{map[string]any{"replicas": 0}, "/replicas"},
		{map[string]any{"replica": 2}, "replica"},
		{map[string]any{"leaderElection": map[string]any{"enabled": false}}, "leaderElection.enabled"},
		{map[string]any{"logLevel": "verbose"}, "/logLevel"},
		{map[string]any{"ports": map[string]any{"xds": 70000}}, "/ports/xds"},
		{map[string]any{"compat": map[string]any{"rootNamespace": "Istio_System"}}, "/compat/rootNamespace"},
		{map[string]any{"compat": map[string]any{"xdsCluster": "my cluster"}}, "/compat/xdsCluster"},
		{map[string]any{"webhook": map[string]any{"failurePolicy": "Retry"}}, "/webhook/failurePolicy"},
	} {
		_, err := deploy.Render(chartDir, deploy.Options{Values: c.values})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one naming %s", c.values, err, c.want)
		}
	}
}

// Another release name and namespace rename everything, so that two releases can share a cluster.
func TestReleaseName(t *testing.T) {
	r, err := deploy.Render(chartDir, deploy.Options{Release: "mesh", Namespace: "mesh-system"})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range r.Objects {
		if name := d.Object.GetName(); !strings.HasPrefix(name, "mesh-meltemi") {
			t.Errorf("%s %s", d.Object.GetKind(), name)
		}
		if ns := d.Object.GetNamespace(); ns != "" && ns != "mesh-system" {
			t.Errorf("%s %s in %s", d.Object.GetKind(), d.Object.GetName(), ns)
		}
	}
}

// TestHelmLint runs Helm's own linter, as helm lint --strict would, with the defaults and with every
// optional part on: anything above information is a failure.
func TestHelmLint(t *testing.T) {
	kv := &chartutil.KubeVersion{Version: deploy.KubeVersion, Major: "1", Minor: "37"}
	for _, values := range []map[string]any{
		nil,
		{"compat": map[string]any{"envoyFilters": true, "bootstrapNamespaces": []any{"shop"}}, "injection": map[string]any{"enabled": true}},
	} {
		l := lint.AllWithKubeVersion(chartDir, values, deploy.DefaultNamespace, kv)
		for _, m := range l.Messages {
			if m.Severity > support.InfoSev {
				t.Errorf("values %v: %s", values, m)
			}
		}
	}
}
