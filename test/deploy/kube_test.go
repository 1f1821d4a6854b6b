package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/meltemi-mesh/meltemi/test/deploy"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// kube is the API server every test of this file talks to: started once, when KUBEBUILDER_ASSETS names a
// folder holding kube-apiserver and etcd.
var kube struct {
	once     sync.Once
	env      *envtest.Environment
	client   client.Client
	warnings *warningLog
	err      error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if kube.env != nil {
		if err := kube.env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the API server:", err)
		}
	}
	os.Exit(code)
}

// apiServer returns a client of the test API server, skipping the test when no binaries are given.
func apiServer(t *testing.T) (client.Client, *warningLog) {
	t.Helper()
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		t.Skip("KUBEBUILDER_ASSETS is not set: make test-kube builds kube-apiserver and etcd and runs this test against them")
	}
	kube.once.Do(func() {
		kube.env = &envtest.Environment{BinaryAssetsDirectory: assets}
		cfg, err := kube.env.Start()
		if err != nil {
			kube.err = fmt.Errorf("start kube-apiserver and etcd from %s: %w", assets, err)
			return
		}
		kube.warnings = &warningLog{}
		cfg = rest.CopyConfig(cfg)
		cfg.WarningHandler = kube.warnings
		kube.client, kube.err = client.New(cfg, client.Options{Scheme: scheme.Scheme})
	})
	if kube.err != nil {
		t.Fatal(kube.err)
	}
	return kube.client, kube.warnings
}

// warningLog keeps the warnings the API server sends (deprecated fields, Pod Security violations, ...).
type warningLog struct {
	mu   sync.Mutex
	list []string
}

func (w *warningLog) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	w.list = append(w.list, text)
	w.mu.Unlock()
}

// take returns the warnings received since the last call.
func (w *warningLog) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.list
	w.list = nil
	return out
}

func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// namespace creates a namespace in which pods must meet the "restricted" Pod Security Standard: the API
// server then warns about every workload that would not.
func namespace(t *testing.T, ctx context.Context, c client.Client, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce": "restricted",
		"pod-security.kubernetes.io/warn":    "restricted",
	}}}
	if err := c.Create(ctx, ns); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("namespace %s: %v", name, err)
	}
}

// apply applies an object with server-side apply, as kubectl apply --server-side does; dryRun leaves the
// cluster unchanged after the server has defaulted, validated and admitted the object.
func apply(ctx context.Context, c client.Client, obj *unstructured.Unstructured, dryRun bool) error {
	opts := []client.ApplyOption{client.FieldOwner("meltemi-deploy-test"), client.ForceOwnership}
	if dryRun {
		opts = append(opts, client.DryRunAll)
	}
	return c.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj.DeepCopy()), opts...)
}

// TestChartApplies renders the chart with several sets of values and applies every object, CRDs
// included, with a server-side dry run: the API server's own validation, defaulting and admission (Pod
// Security "restricted" among them) must take all of it without an error or a warning.
func TestChartApplies(t *testing.T) {
	c, warnings := apiServer(t)
	ctx := timeout(t)
	for i, values := range []map[string]any{
		nil,
		{"compat": map[string]any{"envoyFilters": true, "bootstrapNamespaces": []any{"shop"}}, "injection": map[string]any{"enabled": true}},
		{"replicas": 1, "leaderElection": map[string]any{"enabled": false}, "webhook": map[string]any{"enabled": false}},
	} {
		ns := fmt.Sprintf("meltemi-apply-%d", i)
		namespace(t, ctx, c, ns)
		namespace(t, ctx, c, "shop")
		r, err := deploy.Render(chartDir, deploy.Options{Namespace: ns, Values: values})
		if err != nil {
			t.Fatal(err)
		}
		warnings.take()
		for _, d := range append(r.CRDs, r.Objects...) {
			if err := apply(ctx, c, d.Object, true); err != nil {
				t.Errorf("values %v: %s %s (%s): %v", values, d.Object.GetKind(), d.Object.GetName(), d.Source, err)
			}
			if w := warnings.take(); len(w) > 0 {
				t.Errorf("values %v: %s %s (%s): warnings %q", values, d.Object.GetKind(), d.Object.GetName(), d.Source, w)
			}
		}
	}
}

// TestPlainManifestsApply applies deploy/manifests/meltemi.yaml as kubectl apply --server-side -f would:
// the namespace for real, then everything else as a dry run.
func TestPlainManifestsApply(t *testing.T) {
	c, warnings := apiServer(t)
	ctx := timeout(t)
	b, err := os.ReadFile(manifestFile)
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(string(b), "\n---\n")
	if len(docs) < 10 {
		t.Fatalf("%d documents in %s", len(docs), manifestFile)
	}
	warnings.take()
	for i, doc := range docs[1:] {
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(yamlToJSON(t, doc)); err != nil {
			t.Fatalf("document %d: %v", i+2, err)
		}
		dryRun := obj.GetKind() != "Namespace"
		if err := apply(ctx, c, obj, dryRun); err != nil {
			t.Errorf("document %d, %s %s: %v", i+2, obj.GetKind(), obj.GetName(), err)
		}
		if w := warnings.take(); len(w) > 0 {
			t.Errorf("document %d, %s %s: warnings %q", i+2, obj.GetKind(), obj.GetName(), w)
		}
	}
}

// TestServiceAccountRights creates the chart's RBAC for real and asks the API server's authorizer what its
// ServiceAccount may do: everything the controller needs, and nothing else that was tried.
func TestServiceAccountRights(t *testing.T) {
	c, _ := apiServer(t)
	ctx := timeout(t)
	const ns = "meltemi-rbac"
	namespace(t, ctx, c, ns)
	namespace(t, ctx, c, "other")
	r, err := deploy.Render(chartDir, deploy.Options{Namespace: ns, Values: map[string]any{
		"compat": map[string]any{"envoyFilters": true}, "injection": map[string]any{"enabled": true},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range r.Objects {
		switch d.Object.GetKind() {
		case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
			if err := apply(ctx, c, d.Object, false); err != nil {
				t.Fatalf("%s %s: %v", d.Object.GetKind(), d.Object.GetName(), err)
			}
		}
	}
	user := "system:serviceaccount:" + ns + ":meltemi"
	for _, c2 := range []struct {
		attrs   string // verb group/resource[/subresource] [namespace] [name]
		allowed bool
	}{
		{"list /services", true},
		{"watch /pods", true},
		{"watch /namespaces", true},
		{"watch discovery.k8s.io/endpointslices", true},
		{"list networking.istio.io/serviceentries", true},
		{"watch networking.istio.io/workloadentries", true},
		{"watch networking.istio.io/destinationrules", true},
		{"list /nodes", true},
		{"watch redis.aeraki.io/redisdestinations", true},
		{"create networking.istio.io/envoyfilters istio-system", true},
		{"delete networking.istio.io/envoyfilters istio-system", true},
		{"watch metaprotocol.aeraki.io/metarouters", true},
		{"update metaprotocol.aeraki.io/metarouters/status shop", true},
		{"patch metaprotocol.aeraki.io/applicationprotocols/status shop", true},
		{"create coordination.k8s.io/leases " + ns, true},
		{"update coordination.k8s.io/leases " + ns, true},
		{"create /events " + ns, true},
		{"get /secrets " + ns + " meltemi-webhook-tls", true},
		{"update /secrets " + ns + " meltemi-webhook-tls", true},
		{"patch admissionregistration.k8s.io/validatingwebhookconfigurations - meltemi-validation", true},
		{"patch admissionregistration.k8s.io/mutatingwebhookconfigurations - meltemi-injection", true},

		{"list /secrets", false},
		{"get /secrets " + ns + " other", false},
		{"create /secrets " + ns, false},
		{"create coordination.k8s.io/leases other", false},
		{"create /pods shop", false},
		{"update networking.istio.io/serviceentries shop", false},
		{"create networking.istio.io/virtualservices shop", false},
		{"update metaprotocol.aeraki.io/metarouters shop", false},
		{"patch admissionregistration.k8s.io/validatingwebhookconfigurations - istio-validator-istio-system", false},
		{"patch admissionregistration.k8s.io/mutatingwebhookconfigurations - istio-sidecar-injector", false},
		{"list /configmaps", false},
		{"update /nodes", false},
		{"get /services shop demo", false},
	} {
		ra := resourceAttributes(c2.attrs)
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:               user,
			Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
			ResourceAttributes: ra,
		}}
		if err := c.Create(ctx, sar); err != nil {
			t.Fatal(err)
		}
		if sar.Status.Allowed != c2.allowed {
			t.Errorf("%s: allowed %v, want %v (%s)", c2.attrs, sar.Status.Allowed, c2.allowed, sar.Status.Reason)
		}
	}
}

func resourceAttributes(s string) *authorizationv1.ResourceAttributes {
	f := strings.Fields(s)
	ra := &authorizationv1.ResourceAttributes{Verb: f[0]}
	gr := strings.SplitN(f[1], "/", 3)
	ra.Group, ra.Resource = gr[0], gr[1]
	if len(gr) == 3 {
		ra.Subresource = gr[2]
	}
	if len(f) > 2 && f[2] != "-" {
		ra.Namespace = f[2]
	}
	if len(f) > 3 {
		ra.Name = f[3]
	}
	return ra
}

// TestCompatEnvoyFiltersApply installs Istio's CRDs and applies, as a dry run, every EnvoyFilter the
// generator's golden cases hold: the API server takes them as Istio's schema describes EnvoyFilters.
func TestCompatEnvoyFiltersApply(t *testing.T) {
	c, warnings := apiServer(t)
	ctx := timeout(t)
	// Istio's CRDs ship in the istio.io/api module, at the version the product builds with.
	out, err := exec.Command("go", "mod", "download", "-json", "istio.io/api").Output()
	if err != nil {
		t.Fatalf("locating istio.io/api: %v", err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("locating istio.io/api: %v in %s", err, out)
	}
	crds, err := os.ReadFile(filepath.Join(mod.Dir, "kubernetes", "customresourcedefinitions.gen.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(crds), "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(yamlToJSON(t, doc)); err != nil {
			t.Fatal(err)
		}
		if err := apply(ctx, c, obj, false); err != nil {
			t.Fatalf("Istio CRD %s: %v", obj.GetName(), err)
		}
	}
	// The CRDs serve once established.
	meshtest.Poll(t, 30*time.Second, "Istio's EnvoyFilter kind to be served", func() bool {
		_, err := c.RESTMapper().RESTMapping(schema.GroupKind{Group: "networking.istio.io", Kind: "EnvoyFilter"}, "v1alpha3")
		return err == nil
	})
	goldens, err := filepath.Glob("../../control/envoyfilter/testdata/*/envoyfilters.yaml.golden")
	if err != nil || len(goldens) == 0 {
		t.Fatalf("no golden EnvoyFilters: %v", err)
	}
	applied := 0
	warnings.take()
	for _, g := range goldens {
		b, err := os.ReadFile(g)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range strings.Split(string(b), "\n---\n") {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			obj := &unstructured.Unstructured{}
			if err := obj.UnmarshalJSON(yamlToJSON(t, doc)); err != nil {
				t.Fatalf("%s: %v", g, err)
			}
			namespace(t, ctx, c, obj.GetNamespace())
			if err := apply(ctx, c, obj, true); err != nil {
				t.Errorf("%s: EnvoyFilter %s/%s: %v", g, obj.GetNamespace(), obj.GetName(), err)
			}
			if w := warnings.take(); len(w) > 0 {
				t.Errorf("%s: EnvoyFilter %s/%s: warnings %q", g, obj.GetNamespace(), obj.GetName(), w)
			}
			applied++
		}
	}
	t.Logf("%d EnvoyFilters from %d cases applied", applied, len(goldens))
}

func yamlToJSON(t *testing.T, doc string) []byte {
	t.Helper()
	js, err := yaml.YAMLToJSONStrict([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return js
}
