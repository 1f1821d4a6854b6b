package meltemicmd

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const envoyFilterCases = "../control/envoyfilter/testdata"

func compat(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := NewRootCommand(Builtins())
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append([]string{"compat", "envoyfilters"}, args...))
	err = root.Execute()
	return out.String(), errOut.String(), err
}

// The command prints what the generator's golden files hold, with the options as flags.
func TestCompatEnvoyFilters(t *testing.T) {
	for _, c := range []struct {
		name  string
		flags []string
	}{
		{"aeraki-example", nil},
		{"mesh-config", []string{"--xds-cluster", "aeraki-xds", "--root-namespace", "istio-config",
			"--access-log-file", "/dev/stdout", "--tracing-sampling", "1"}},
		{"export-to", []string{"--namespace-scoped"}},
	} {
		dir := filepath.Join(envoyFilterCases, c.name)
		out, errOut, err := compat(t, append([]string{"-f", dir}, c.flags...)...)
		if err != nil {
			t.Fatalf("%s: %v\n%s", c.name, err, errOut)
		}
		want, err := os.ReadFile(filepath.Join(dir, "envoyfilters.yaml.golden"))
		if err != nil {
			t.Fatal(err)
		}
		if out != string(want) {
			t.Errorf("%s: output differs from %s:\n%s", c.name, filepath.Join(dir, "envoyfilters.yaml.golden"), out)
		}
		if strings.Contains(errOut, "EnvoyFilter") {
			t.Errorf("%s: stderr %q", c.name, errOut)
		}
	}
}

func TestCompatEnvoyFiltersProblems(t *testing.T) {
	dir := filepath.Join(envoyFilterCases, "left-out")
	out, errOut, err := compat(t, "-f", dir)
	if !errors.Is(err, errInvalidConfig) {
		t.Fatalf("err = %v, want errInvalidConfig (exit 1)", err)
	}
	if !strings.Contains(out, "name: aeraki-outbound-no-selector.default.svc.cluster.local-10.96.50.1-20880") {
		t.Errorf("what could be generated is not printed:\n%s", out)
	}
	if !strings.Contains(errOut, filepath.Join(dir, "services.yaml")+": ServiceEntry default/bad-annotation: metadata.annotations.workloadSelector: ") {
		t.Errorf("stderr:\n%s", errOut)
	}
	if _, _, err := compat(t, "-f", dir, "--access-log-file", "/dev/stdout", "--access-log-encoding", "XML"); err == nil ||
		!strings.Contains(err.Error(), "accessLog.encoding") {
		t.Errorf("bad encoding: %v", err)
	}
}
