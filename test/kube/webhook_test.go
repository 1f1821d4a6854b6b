package kubeinterop

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/source"
	"github.com/meltemi-mesh/meltemi/control/validation"
	"github.com/meltemi-mesh/meltemi/control/webhook"
	"github.com/meltemi-mesh/meltemi/test/kube/kubetest"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// warnings records the admission warnings the API server passes on, as kubectl prints them.
type warnings struct {
	mu   sync.Mutex
	seen []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen = append(w.seen, text)
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.seen
	w.seen = nil
	return out
}

// webhookManifest returns the objects of deploy/kubernetes/validating-webhook.yaml with every
// webhook calling url instead of the Service: the API server of a test cannot reach a Service.
func webhookManifest(t testing.TB, url string) *unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "kubernetes", "validating-webhook.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := kubetest.Decode(string(data))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range objs {
		if u.GetKind() != "ValidatingWebhookConfiguration" {
			continue
		}
		hooks, _, _ := unstructured.NestedSlice(u.Object, "webhooks")
		for _, h := range hooks {
			cc := h.(map[string]any)["clientConfig"].(map[string]any)
			path := cc["service"].(map[string]any)["path"].(string)
			delete(cc, "service")
			cc["url"] = url + path
		}
		if err := unstructured.SetNestedSlice(u.Object, hooks, "webhooks"); err != nil {
			t.Fatal(err)
		}
		return u
	}
	t.Fatal("no ValidatingWebhookConfiguration in deploy/kubernetes/validating-webhook.yaml")
	return nil
}

// startWebhook runs the controller's webhook server with the validating handler on a loopback
// address, its certificate for that address, and the caBundle patcher, until the test ends. The
// handler tries objects in the snapshot of a kube source of the cluster.
func startWebhook(t testing.TB, c *kubetest.Cluster, host string) (url string, src *updates) {
	t.Helper()
	c.Namespace(t, "meltemi-system")
	src = runSource(t, c.Config, nil)
	srv, err := webhook.New(c.Config, webhook.Options{Hosts: []string{host}, Namespace: "meltemi-system", Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	srv.Handle(validation.Path, &validation.Handler{
		Snapshot: func() *model.Snapshot { return src.last().Snapshot },
		Model:    model.Options{Codecs: modelCodecs(t), Local: true},
	})
	lis, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- srv.Run(ctx, lis) }()
	go func() { done <- srv.PatchCABundles(ctx) }()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("webhook: %v", err)
			}
		}
	})
	return "https://" + lis.Addr().String(), src
}

// TestValidatingWebhook installs the webhook configuration of deploy/kubernetes, pointed at the
// controller's webhook server, and applies objects through the real API server as kubectl would: a
// MetaRouter the controller would not serve is refused with every error by field, a good one is
// admitted, and what depends on other objects comes back as warnings.
func TestValidatingWebhook(t *testing.T) {
	c := kubetest.Start(t)
	host := meshtest.NewNet().Host(1)
	url, src := startWebhook(t, c, host)
	c.Apply(t, "shop", shop)
	cfg := webhookManifest(t, url)
	if err := c.Client.Create(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Delete(t, cfg) })

	meshtest.Poll(t, waitLimit, "the caBundle patched into both webhooks", func() bool {
		var got admissionregistrationv1.ValidatingWebhookConfiguration
		if err := c.Client.Get(context.Background(), client.ObjectKey{Name: cfg.GetName()}, &got); err != nil {
			return false
		}
		for _, w := range got.Webhooks {
			if len(w.ClientConfig.CABundle) == 0 || !bytes.Contains(w.ClientConfig.CABundle, []byte("BEGIN CERTIFICATE")) {
				return false
			}
		}
		return len(got.Webhooks) == 2
	})
	src.wait(t, "the demo router in the source's snapshot", func(u source.Update) bool { return len(u.Snapshot.Objects.MetaRouters) == 1 })

	warned := &warnings{}
	wcfg := rest.CopyConfig(c.Config)
	wcfg.WarningHandler = warned
	kc, err := client.New(wcfg, client.Options{Scheme: c.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	create := func(text string) error {
		u := kubetest.MustDecodeOne(t, text)
		u.SetNamespace("shop")
		err := kc.Create(context.Background(), u)
		if err == nil {
			t.Cleanup(func() { c.Delete(t, u) })
		}
		return err
	}

	bad := `
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: bad}
spec:
  hosts: [demo.shop.svc.cluster.local]
  exportTo: ['*', other]
  routes: [{name: r, match: {attributes: {method: {regex: '('}}}, route: [{destination: {host: demo.shop.svc.cluster.local}}]}]
`
	// The API server takes the configuration in a moment after it is written: until then, objects pass.
	var refused error
	meshtest.Poll(t, waitLimit, "the webhook to refuse a bad MetaRouter", func() bool {
		refused = create(bad)
		if refused == nil {
			c.Delete(t, kubetest.MustDecodeOne(t, strings.ReplaceAll(bad, "{name: bad}", "{name: bad, namespace: shop}")))
		}
		return refused != nil && strings.Contains(refused.Error(), "denied the request")
	})
	t.Logf("refused: %v", refused)
	for _, want := range []string{
		`MetaRouter shop/bad: spec.exportTo: "*" exports to every namespace and cannot be listed with other entries`,
		"MetaRouter shop/bad: spec.routes[0].match.attributes.method.regex: not an RE2 expression",
	} {
		if !strings.Contains(refused.Error(), want) {
			t.Errorf("refusal lacks %q", want)
		}
	}
	var status *apierrors.StatusError
	if !errors.As(refused, &status) || !apierrors.IsInvalid(refused) {
		t.Errorf("refusal %T is not Invalid: %v", refused, refused)
	}
	warned.take()

	// A good one is admitted; its own warnings come back.
	if err := create(`
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: limited}
spec:
  hosts: [other.shop.svc.cluster.local]
  localRateLimit: {}
`); err != nil {
		t.Fatalf("a good MetaRouter was refused: %v", err)
	}
	wantWarnings(t, warned.take(),
		"MetaRouter shop/limited: spec.localRateLimit: neither tokenBucket nor conditions: nothing is limited",
		`MetaRouter shop/limited: spec.hosts[0]: no ServiceEntry defines host "other.shop.svc.cluster.local"`)

	// A second router for a routed host is admitted, warned about.
	if err := create(`
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: second}
spec:
  hosts: [demo.shop.svc.cluster.local]
  routes: [{name: all, route: [{destination: {host: demo.shop.svc.cluster.local}}]}]
`); err != nil {
		t.Fatalf("a second MetaRouter was refused: %v", err)
	}
	wantWarnings(t, warned.take(), `MetaRouter shop/second: spec.hosts[0]: host "demo.shop.svc.cluster.local" is already routed by MetaRouter shop/demo`)

	// An edit that breaks a served object is refused too.
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(metaRouterGVK)
	c.Get(t, withKey(u, "shop", "demo"))
	if err := unstructured.SetNestedSlice(u.Object, []any{"demo.shop.svc.cluster.local"}, "spec", "hosts"); err != nil {
		t.Fatal(err)
	}
	unstructured.RemoveNestedField(u.Object, "spec", "routes")
	if err := kc.Update(context.Background(), u); err == nil ||
		!strings.Contains(err.Error(), "MetaRouter shop/demo: spec: at least one of routes, localRateLimit and globalRateLimit is required") {
		t.Errorf("an update dropping every route: %v", err)
	}

	// Istio's objects are only warned about, when they concern meta-protocol ports.
	if err := create(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: rpc}
spec:
  hosts: [rpc.shop.example]
  addresses: [127.0.0.11]
  ports: [{number: 7000, name: tcp-metaprotocol-nosuch}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.2}]
`); err != nil {
		t.Fatalf("a ServiceEntry was refused: %v", err)
	}
	wantWarnings(t, warned.take(), `meltemi: ServiceEntry shop/rpc: spec.ports[0]: application protocol "nosuch" has no codec`)
	if err := create(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec: {hosts: [web.shop.example], ports: [{number: 80, name: http}], resolution: DNS}
`); err != nil {
		t.Fatal(err)
	}
	if w := warned.take(); len(w) != 0 {
		t.Errorf("warnings about an HTTP service: %q", w)
	}
}

func withKey(u *unstructured.Unstructured, namespace, name string) *unstructured.Unstructured {
	u.SetNamespace(namespace)
	u.SetName(name)
	return u
}

// wantWarnings fails unless got holds, in order, warnings starting with each of want, and no others.
func wantWarnings(t testing.TB, got []string, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("warnings %q, want %d", got, len(want))
		return
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("warning %d: %q, want %q...", i+1, got[i], want[i])
		}
	}
}

var metaRouterGVK = schema.GroupVersionKind{Group: "metaprotocol.aeraki.io", Version: "v1alpha1", Kind: "MetaRouter"}
