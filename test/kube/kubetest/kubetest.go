// Package kubetest runs a real kube-apiserver and etcd (controller-runtime's envtest) for tests of
// everything in Meltemi that reads or writes a cluster: the kube config source today, webhooks,
// status writers and sidecar injection later. Each Cluster has Meltemi's CRDs (api/crds) and the
// Istio networking CRDs Meltemi reads (shipped in the istio.io/api module) installed, and talks
// through the scheme every Meltemi client uses (api/scheme).
//
// The binaries come from hack/kube-assets.sh, which builds them from the Go module proxy and prints
// their folder; `make test-kube` runs it and sets KUBEBUILDER_ASSETS. Without KUBEBUILDER_ASSETS a
// test that asks for a cluster is skipped, saying how to get one, so that plain `go test` stays
// green on a machine without them.
package kubetest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	"github.com/meltemi-mesh/meltemi/api/crds"
	"github.com/meltemi-mesh/meltemi/api/scheme"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// AssetsEnv names the folder holding the kube-apiserver and etcd binaries, as envtest reads it.
const AssetsEnv = "KUBEBUILDER_ASSETS"

// IstioKinds are the Istio networking kinds whose CRDs every Cluster has: those Meltemi reads.
var IstioKinds = []string{"ServiceEntry", "WorkloadEntry", "DestinationRule"}

// Cluster is a running API server with its etcd, stopped when the test that started it ends.
type Cluster struct {
	// Config reaches the API server as its administrator.
	Config *rest.Config
	// Client is a client of Config with Meltemi's scheme.
	Client client.Client
	// Scheme is the scheme Client uses: api/scheme's, and apiextensions.k8s.io for handling CRDs.
	Scheme *runtime.Scheme

	env *envtest.Environment
}

func init() {
	// controller-runtime complains, after a while, when nothing has set its logger, and client-go's
	// klog writes to stderr: tests show neither unless they ask.
	discard := logr.FromSlogHandler(slog.DiscardHandler)
	ctrllog.SetLogger(discard)
	klog.SetLogger(discard)
}

// Start starts a cluster of the test's own on a loopback address of its own and stops it when the
// test ends. It skips the test when AssetsEnv is not set.
func Start(t testing.TB) *Cluster {
	t.Helper()
	assets := os.Getenv(AssetsEnv)
	if assets == "" {
		t.Skipf("no real API server: %s is not set. Run `make test-kube`, which builds kube-apiserver and etcd "+
			"with hack/kube-assets.sh (cached under ~/.cache/meltemi) and sets it", AssetsEnv)
	}
	defs, err := CRDs()
	if err != nil {
		t.Fatal(err)
	}
	host := meshtest.NewNet().Host(1)
	apiPort, etcdPort := meshtest.FreePort(t, host), meshtest.FreePort(t, host)
	s := scheme.New()
	// Tests also handle CRDs themselves, which no Meltemi client does.
	if err := apiextensionsv1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		Scheme:                s,
		CRDs:                  defs,
		ControlPlane: envtest.ControlPlane{
			APIServer: &envtest.APIServer{SecureServing: envtest.SecureServing{
				ListenAddr: envtest.ListenAddr{Address: host, Port: strconv.Itoa(apiPort)},
			}},
			Etcd: &envtest.Etcd{URL: &url.URL{Scheme: "http", Host: net.JoinHostPort(host, strconv.Itoa(etcdPort))}},
		},
		// The machine running the tests may be busy: the default 20 s is not always enough.
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	begin := time.Now()
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting kube-apiserver and etcd from %s: %v", assets, err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping kube-apiserver and etcd: %v", err)
		}
	})
	t.Logf("kube-apiserver on %s, CRDs established, in %v", cfg.Host, time.Since(begin).Round(time.Millisecond))
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		t.Fatal(err)
	}
	return &Cluster{Config: cfg, Client: c, Scheme: s, env: env}
}

// CRDs returns the CustomResourceDefinitions a Cluster installs: Meltemi's and Istio's IstioKinds.
func CRDs() ([]*apiextensionsv1.CustomResourceDefinition, error) {
	var out []*apiextensionsv1.CustomResourceDefinition
	err := fs.WalkDir(crds.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := crds.FS.ReadFile(path)
		if err != nil {
			return err
		}
		defs, err := decodeCRDs(data)
		if err != nil {
			return fmt.Errorf("api/crds/%s: %w", path, err)
		}
		out = append(out, defs...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	istio, err := IstioCRDs(IstioKinds...)
	if err != nil {
		return nil, err
	}
	return append(out, istio...), nil
}

// IstioCRDs returns the CRDs of the given networking.istio.io kinds, from the file of all Istio
// CRDs that the istio.io/api module ships (kubernetes/customresourcedefinitions.gen.yaml).
func IstioCRDs(kinds ...string) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	dir, err := moduleDir("istio.io/api")
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "kubernetes", "customresourcedefinitions.gen.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("istio CRDs: %w", err)
	}
	all, err := decodeCRDs(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var out []*apiextensionsv1.CustomResourceDefinition
	for _, crd := range all {
		if crd.Spec.Group == "networking.istio.io" && slices.Contains(kinds, crd.Spec.Names.Kind) {
			out = append(out, crd)
		}
	}
	if len(out) != len(kinds) {
		return nil, fmt.Errorf("%s: found %d of the CRDs of %v", path, len(out), kinds)
	}
	return out, nil
}

// moduleDir is where the go command keeps a module the test module requires.
func moduleDir(module string) (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", module).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		return "", fmt.Errorf("go list -m %s: %w", module, err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return "", fmt.Errorf("go list -m %s: not downloaded", module)
	}
	return dir, nil
}

func decodeCRDs(data []byte) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	var out []*apiextensionsv1.CustomResourceDefinition
	dec := utilyaml.NewYAMLReader(bufioReader(data))
	for {
		doc, err := dec.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(doc)) == 0 || bytes.Equal(bytes.TrimSpace(doc), []byte("---")) {
			continue
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.Unmarshal(doc, crd); err != nil {
			return nil, err
		}
		if crd.Kind == "CustomResourceDefinition" {
			out = append(out, crd)
		}
	}
}

// KubeConfig writes a kubeconfig file for the cluster's administrator into the test's temporary
// folder and returns its path, for commands run as child processes.
func (c *Cluster) KubeConfig(t testing.TB) string {
	t.Helper()
	return c.UserKubeConfig(t, "meltemi-test-admin", "system:masters")
}

// UserKubeConfig writes a kubeconfig file for a user of that name in those groups, whose rights are
// whatever RBAC grants them (a ServiceAccount's, for the name system:serviceaccount:NAMESPACE:NAME).
func (c *Cluster) UserKubeConfig(t testing.TB, name string, groups ...string) string {
	t.Helper()
	user, err := c.env.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// User returns a config that authenticates as a user of that name in those groups, whose rights are
// whatever RBAC grants them.
func (c *Cluster) User(t testing.TB, name string, groups ...string) *rest.Config {
	t.Helper()
	user, err := c.env.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return user.Config()
}

// Namespace creates a namespace for the test and returns its name. (The API server has no namespace
// controller, so namespaces are never really deleted: objects are deleted one by one instead.)
func (c *Cluster) Namespace(t testing.TB, name string) string {
	t.Helper()
	ns := &unstructured.Unstructured{}
	ns.SetAPIVersion("v1")
	ns.SetKind("Namespace")
	ns.SetName(name)
	if err := c.Client.Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	return name
}

// Apply creates the objects of a multi-document YAML text, or updates them if they exist, in
// namespace unless they name their own, creating the namespaces they need. They are deleted when the
// test ends. It returns the objects as the API server stored them.
func (c *Cluster) Apply(t testing.TB, namespace, text string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := Decode(text)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var out []*unstructured.Unstructured
	for _, u := range objs {
		if u.GetNamespace() == "" && c.namespaced(t, u) {
			u.SetNamespace(namespace)
		}
		if ns := u.GetNamespace(); ns != "" {
			c.Namespace(t, ns)
		}
		if err := c.apply(ctx, u); err != nil {
			t.Fatalf("applying %s %s/%s: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
		out = append(out, u)
		t.Cleanup(func() { c.delete(t, u) })
	}
	return out
}

func (c *Cluster) apply(ctx context.Context, u *unstructured.Unstructured) error {
	err := c.Client.Create(ctx, u)
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	current := &unstructured.Unstructured{}
	current.SetGroupVersionKind(u.GroupVersionKind())
	if err := c.Client.Get(ctx, client.ObjectKeyFromObject(u), current); err != nil {
		return err
	}
	u.SetResourceVersion(current.GetResourceVersion())
	return c.Client.Update(ctx, u)
}

// delete deletes at once: nothing in this cluster would finish a graceful deletion (no kubelet).
func (c *Cluster) delete(t testing.TB, u *unstructured.Unstructured) {
	err := c.Client.Delete(context.Background(), u, client.GracePeriodSeconds(0))
	if err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("deleting %s %s/%s: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
}

func (c *Cluster) namespaced(t testing.TB, u *unstructured.Unstructured) bool {
	t.Helper()
	ok, err := c.Client.IsObjectNamespaced(u)
	if err != nil {
		t.Fatalf("%s: %v", u.GroupVersionKind(), err)
	}
	return ok
}

// Decode reads a multi-document YAML text into objects, in order.
func Decode(text string) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	dec := utilyaml.NewYAMLReader(bufioReader([]byte(text)))
	for i := 1; ; i++ {
		doc, err := dec.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := json.Unmarshal(js, &u.Object); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		out = append(out, u)
	}
}

// MustDecodeOne reads a YAML text holding one object.
func MustDecodeOne(t testing.TB, text string) *unstructured.Unstructured {
	t.Helper()
	objs, err := Decode(text)
	if err != nil || len(objs) != 1 {
		t.Fatalf("want one object, got %d (%v) in %s", len(objs), err, text)
	}
	return objs[0]
}

// Delete deletes an object at once, as a user would with --grace-period=0.
func (c *Cluster) Delete(t testing.TB, obj client.Object) {
	t.Helper()
	if err := c.Client.Delete(context.Background(), obj, client.GracePeriodSeconds(0)); err != nil {
		t.Fatalf("deleting %s: %v", client.ObjectKeyFromObject(obj), err)
	}
}

// DeleteCRD deletes a CustomResourceDefinition and waits until the API server no longer serves it,
// for tests of a cluster that lacks one.
func (c *Cluster) DeleteCRD(t testing.TB, name string) {
	t.Helper()
	crd := &apiextensionsv1.CustomResourceDefinition{}
	crd.Name = name
	if err := c.Client.Delete(context.Background(), crd); err != nil {
		t.Fatalf("deleting CRD %s: %v", name, err)
	}
	meshtest.Poll(t, time.Minute, "CRD "+name+" to be gone", func() bool {
		err := c.Client.Get(context.Background(), client.ObjectKeyFromObject(crd), crd)
		return apierrors.IsNotFound(err)
	})
}

// Get reads an object back.
func (c *Cluster) Get(t testing.TB, obj client.Object) {
	t.Helper()
	if err := c.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
		t.Fatalf("reading %s: %v", client.ObjectKeyFromObject(obj), err)
	}
}

func bufioReader(data []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(data)) }
