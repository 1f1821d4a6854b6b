package meltemicmd

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const examples = "../control/source/file/testdata"

// validate runs "meltemi validate args..." and returns what it printed and whether it failed, which
// main turns into exit status 1.
func validate(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	root := NewRootCommand(Builtins())
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"validate"}, args...))
	err := root.Execute()
	return out.String(), err
}

func TestValidateValidFolder(t *testing.T) {
	out, err := validate(t, "-f", filepath.Join(examples, "valid"))
	if err != nil {
		t.Fatalf("exit 1 for a valid folder: %v\n%s", err, out)
	}
	vip := regexp.MustCompile(`addresses: (127\.240\.\d+\.\d+) \(allocated\)`).FindStringSubmatch(out)
	if vip == nil {
		t.Fatalf("no allocated VIP shown:\n%s", out)
	}
	want := strings.Join([]string{
		"Served meta-protocol services:",
		"  org.apache.dubbo.samples.basic.api.demoservice (ServiceEntry meta-dubbo/dubbo-demo)",
		"    addresses: " + vip[1] + " (allocated)",
		"    port 20880 tcp-metaprotocol-dubbo: dubbo (aeraki.meta_protocol.codec.dubbo), listening on " + vip[1] + ":20880",
		"      endpoints: 127.0.0.1:20881 {version=v1}, 127.0.0.1:20882 {version=v2}",
		"    subsets: v1 {version=v1}, v2 {version=v2}",
		"    router: MetaRouter meta-dubbo/dubbo-demo",
		"",
		"0 errors, 0 warnings",
		"",
	}, "\n")
	if out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
}

func TestValidateBrokenFolder(t *testing.T) {
	dir := filepath.Join(examples, "broken")
	out, err := validate(t, "--filename", dir)
	if !errors.Is(err, errInvalidConfig) {
		t.Fatalf("err = %v, want errInvalidConfig (exit 1)", err)
	}
	lines := strings.Split(out, "\n")
	wantPrefixes := []string{
		filepath.Join(dir, "clash.yaml") + ": ServiceEntry demo/second: spec.addresses[1]: warning: 10.0.0.1 is outside 127.0.0.0/8",
		filepath.Join(dir, "clash.yaml") + ": ServiceEntry demo/second: spec.addresses[0]: 127.0.0.10:20880 is already served",
		filepath.Join(dir, "metarouter.yaml") + ": MetaRouter demo/typo: spec.routes[0].xroute: unknown field",
		filepath.Join(dir, "not-yaml.yaml") + ": document 1: invalid YAML: line 8:",
		filepath.Join(dir, "unknown-field.yaml") + ": ServiceEntry default/typo: spec.ports[0].nmae: unknown field",
		filepath.Join(dir, "unknown-protocol.yaml") + ": ServiceEntry demo/nosuch: spec.ports[0]: application protocol \"nosuch\" has no codec",
		"",
	}
	for i, w := range wantPrefixes {
		if i >= len(lines) || !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d:\n got %q\nwant %q...", i+1, lines[min(i, len(lines)-1)], w)
		}
	}
	if !strings.Contains(out, "listening on none") || !strings.HasSuffix(out, "\n5 errors, 1 warning\n") {
		t.Errorf("summary missing:\n%s", out)
	}
}

func TestValidateWarningsAlonePass(t *testing.T) {
	dir := t.TempDir()
	se := `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: demo}
spec:
  hosts: [demo.example]
  addresses: [10.1.2.3]
  ports: [{number: 20880, name: tcp-dubbo}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
`
	if err := os.WriteFile(filepath.Join(dir, "se.yaml"), []byte(se), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := validate(t, "-f", dir)
	if err != nil {
		t.Fatalf("exit 1 on warnings alone: %v\n%s", err, out)
	}
	if !strings.HasPrefix(out, filepath.Join(dir, "se.yaml")+": ServiceEntry default/demo: spec.addresses[0]: warning: ") ||
		!strings.Contains(out, "(allocated)") || !strings.HasSuffix(out, "0 errors, 1 warning\n") {
		t.Errorf("output:\n%s", out)
	}
}

func TestValidateUsage(t *testing.T) {
	if _, err := validate(t); err == nil || !strings.Contains(err.Error(), `"filename" not set`) {
		t.Errorf("without -f: err = %v, want the missing flag named", err)
	}
	if _, err := validate(t, "-f", filepath.Join(t.TempDir(), "missing")); err == nil || errors.Is(err, errInvalidConfig) {
		t.Errorf("missing folder: err = %v, want a read error", err)
	}
	out, err := validate(t, "-f", filepath.Join(examples, "valid", "metarouter.yaml"))
	if err != nil || !strings.Contains(out, "No meta-protocol service is served.") {
		t.Errorf("a single file: err = %v, output:\n%s", err, out)
	}
}

// TestValidateTrafficPolicy prints each bad field of the traffic policy a user writes, by its path.
func TestValidateTrafficPolicy(t *testing.T) {
	dir := t.TempDir()
	const manifests = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: demo, namespace: shop}
spec:
  hosts: [demo.example]
  ports: [{number: 20880, name: tcp-dubbo}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: demo, namespace: shop}
spec:
  host: demo.example
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 3, maxEjectionPercent: 150, baseEjectionTime: 3 minutes}
---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: demo, namespace: shop}
spec:
  hosts: [demo.example]
  routes:
  - name: slow
    timeout: 1s
    retries: {attempts: 2, perTryTimeout: 2s}
    route: [{destination: {host: demo.example}}]
---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: bad, namespace: shop}
spec:
  hosts: [other.example]
  routes:
  - name: r
    retries: {attempts: 2, retryOn: "connect-failure,refused-stream"}
    fault: {abort: {errorKind: teapot}}
    concurrencyLimit: {maxRequests: 0}
    route: [{destination: {host: other.example}}]
---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: worse, namespace: shop}
spec:
  hosts: [other.example]
  routes:
  - name: r
    timeout: soon
    route: [{destination: {host: other.example}}]
`
	file := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(file, []byte(manifests), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := validate(t, "-f", dir)
	if !errors.Is(err, errInvalidConfig) {
		t.Fatalf("err = %v, want errInvalidConfig (exit 1)\n%s", err, out)
	}
	for _, want := range []string{
		file + `: DestinationRule shop/demo: spec.trafficPolicy.outlierDetection.baseEjectionTime: "3 minutes" is not a duration such as "30s" or "1m"`,
		file + `: MetaRouter shop/demo: spec.routes[0].retries.perTryTimeout: warning: 2s is longer than the route's timeout (1s), which ends the request first`,
		file + `: MetaRouter shop/bad: spec.routes[0].retries.retryOn: "refused-stream" is not a retry condition (connect-failure, reset, timeout, retriable-status-codes, failed, or 5xx, gateway-error)`,
		file + `: MetaRouter shop/bad: spec.routes[0].fault.abort.errorKind: unknown error kind "teapot"; one of route_not_found, no_healthy_upstream, bad_response, unspecified, over_limit, timeout, unauthorized, bad_request`,
		file + `: MetaRouter shop/bad: spec.routes[0].concurrencyLimit.maxRequests: must be at least 1`,
		file + `: MetaRouter shop/worse: spec.routes[0].timeout: "soon" is not a duration such as "2s" or "500ms"`,
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("no line\n  %s\nin\n%s", want, out)
		}
	}
	// The bad DestinationRule is not served, and neither are the bad MetaRouters; the good one is.
	if !strings.Contains(out, "router: MetaRouter shop/demo") || !strings.HasSuffix(out, "\n5 errors, 1 warning\n") {
		t.Errorf("summary:\n%s", out)
	}
}
