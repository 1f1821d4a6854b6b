package file_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/source"
	"github.com/meltemi-mesh/meltemi/control/source/file"
)

const demoHost = "org.apache.dubbo.samples.basic.api.demoservice"

var opts = file.Options{Model: model.Options{Codecs: model.Codecs{"dubbo": "aeraki.meta_protocol.codec.dubbo"}, Local: true}}

// copyValid copies the valid example into a new folder and returns it.
func copyValid(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	entries, err := os.ReadDir("testdata/valid")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join("testdata/valid", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, e.Name()), string(data))
	}
	return dir
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func scan(t *testing.T, s *file.Source) source.Update {
	t.Helper()
	u, err := s.Scan()
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func problemLines(problems []model.Problem) string {
	var lines []string
	for _, p := range problems {
		lines = append(lines, "  "+p.String())
	}
	return strings.Join(lines, "\n")
}

func TestValidExample(t *testing.T) {
	u := scan(t, file.New("testdata/valid", opts))
	if len(u.Problems) > 0 {
		t.Fatalf("problems in the valid example:\n%s", problemLines(u.Problems))
	}
	snap := u.Snapshot
	if snap.Version != 1 || snap.Objects.Len() != 4 {
		t.Errorf("version %d with %d objects, want 1 and 4", snap.Version, snap.Objects.Len())
	}
	services := snap.MetaProtocolServices()
	if len(services) != 1 || services[0].Host != demoHost {
		t.Fatalf("services %+v, want %s", services, demoHost)
	}
	svc := services[0]
	if len(svc.Addresses) != 1 || !svc.Addresses[0].Allocated || !model.VIPRange.Contains(svc.Addresses[0].IP) {
		t.Errorf("addresses %+v, want one allocated VIP", svc.Addresses)
	}
	port := svc.Port(20880)
	if port == nil || port.App != "dubbo" || len(port.Endpoints) != 2 {
		t.Fatalf("port 20880: %+v", port)
	}
	for i, version := range []string{"v1", "v2"} {
		ep := port.Endpoints[i]
		if ep.Port != uint32(20881+i) || ep.Labels["version"] != version {
			t.Errorf("endpoint %d: %+v", i, ep)
		}
		sub := svc.Subset(version)
		if sub == nil || len(port.EndpointsFor(sub.Labels)) != 1 {
			t.Errorf("subset %s: %+v", version, sub)
		}
	}
	if svc.Router == nil || svc.Router.Spec.Routes[0].Route[0].Weight != 20 || svc.Router.Spec.Routes[0].Route[1].Weight != 80 {
		t.Errorf("router %+v, want the 20/80 split", svc.Router)
	}
	if len(snap.Listeners) != 1 || snap.Listeners[0].Address.Addr() != svc.Addresses[0].IP {
		t.Errorf("listeners %+v", snap.Listeners)
	}
}

func TestBrokenExamples(t *testing.T) {
	u := scan(t, file.New("testdata/broken", opts))
	want := []string{
		"clash.yaml: ServiceEntry demo/second: spec.addresses[1]: warning: 10.0.0.1 is outside 127.0.0.0/8",
		`clash.yaml: ServiceEntry demo/second: spec.addresses[0]: 127.0.0.10:20880 is already served by host "first.example"`,
		"metarouter.yaml: MetaRouter demo/typo: spec.routes[0].xroute: unknown field",
		"not-yaml.yaml: document 1: invalid YAML: line 8: did not find expected ',' or ']'",
		"unknown-field.yaml: ServiceEntry default/typo: spec.ports[0].nmae: unknown field",
		`unknown-protocol.yaml: ServiceEntry demo/nosuch: spec.ports[0]: application protocol "nosuch" has no codec`,
	}
	if len(u.Problems) != len(want) {
		t.Errorf("%d problems, want %d:\n%s", len(u.Problems), len(want), problemLines(u.Problems))
	}
	for i, w := range want {
		if i >= len(u.Problems) {
			break
		}
		if got := u.Problems[i].String(); !strings.HasPrefix(got, filepath.Join("testdata/broken", w)) {
			t.Errorf("problem %d:\n got %s\nwant %s...", i, got, w)
		}
	}
	if snap := u.Snapshot; snap.Service("first.example") == nil || snap.Service("typo.example") != nil {
		t.Errorf("want first.example served and typo.example not")
	}
}

func TestLastGoodVersion(t *testing.T) {
	dir := copyValid(t)
	path := filepath.Join(dir, "dubbo-demo.yaml")
	good := readFile(t, path)
	s := file.New(dir, opts)
	first := scan(t, s)

	// The ServiceEntry turns bad: it keeps its last good version, and says so.
	writeFile(t, path, strings.Replace(good, "resolution: STATIC", "resolution: STATIC\n  sneaky: true", 1))
	u := scan(t, s)
	if u.Snapshot != first.Snapshot {
		t.Errorf("snapshot replaced (version %d) though what is served did not change", u.Snapshot.Version)
	}
	if u.Snapshot.Service(demoHost) == nil {
		t.Fatalf("service dropped")
	}
	wantProblems(t, u.Problems,
		"dubbo-demo.yaml: ServiceEntry meta-dubbo/dubbo-demo: spec.sneaky: unknown field",
		"dubbo-demo.yaml: ServiceEntry meta-dubbo/dubbo-demo: warning: serving its last good version")

	// The good DestinationRule beside it still changes.
	writeFile(t, path, strings.Replace(readFile(t, path), "name: v2\n", "name: v2b\n", 1))
	u = scan(t, s)
	if u.Snapshot.Version != 2 || u.Snapshot.Service(demoHost).Subset("v2b") == nil {
		t.Errorf("version %d; want 2 with subset v2b", u.Snapshot.Version)
	}

	// Fixed, with a change: served as written, no problems left.
	writeFile(t, path, strings.Replace(good, "20882", "20883", 1))
	u = scan(t, s)
	wantProblems(t, u.Problems)
	if got := u.Snapshot.Service(demoHost).Port(20880).Endpoints[1].Port; got != 20883 || u.Snapshot.Version != 3 {
		t.Errorf("version %d endpoint port %d, want 3 and 20883", u.Snapshot.Version, got)
	}

	// Caught empty in the middle of an in-place save: its objects stay until it has content again.
	fixed := readFile(t, path)
	writeFile(t, path, "")
	u = scan(t, s)
	if u.Snapshot.Version != 3 || u.Snapshot.Service(demoHost) == nil {
		t.Errorf("version %d after the file was emptied, want 3 with the service still served", u.Snapshot.Version)
	}
	if !strings.Contains(problemLines(u.Problems), "dubbo-demo.yaml: warning: empty") {
		t.Errorf("no warning about the empty file:\n%s", problemLines(u.Problems))
	}
	writeFile(t, path, fixed)
	if u = scan(t, s); u.Snapshot.Version != 3 || model.HasErrors(u.Problems) {
		t.Errorf("version %d after the save completed, want 3 and no errors", u.Snapshot.Version)
	}

	// The ServiceEntry's document is not YAML any more, so it cannot be named: every object the file
	// held and no longer shows keeps its last good version.
	writeFile(t, path, strings.Replace(good, "kind: ServiceEntry\n", "kind: ServiceEntry\n: : [\n", 1))
	u = scan(t, s)
	if u.Snapshot.Version != 3 || u.Snapshot.Service(demoHost).Port(20880).Endpoints[1].Port != 20883 {
		t.Errorf("version %d, want 3 with the last good ServiceEntry", u.Snapshot.Version)
	}
	wantProblems(t, u.Problems,
		"dubbo-demo.yaml: document 1: invalid YAML: line ",
		"dubbo-demo.yaml: ServiceEntry meta-dubbo/dubbo-demo: warning: serving its last good version")

	// An object removed from a valid file is gone.
	docs := strings.SplitN(good, "\n---\n", 2)
	writeFile(t, path, docs[0])
	u = scan(t, s)
	if model.HasErrors(u.Problems) {
		t.Errorf("errors:\n%s", problemLines(u.Problems))
	}
	if u.Snapshot.Service(demoHost).DestinationRule != nil || u.Snapshot.Version != 4 {
		t.Errorf("version %d; want 4 without the DestinationRule", u.Snapshot.Version)
	}

	// A deleted file takes its objects with it; the router now routes to a host that is not there.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	u = scan(t, s)
	if u.Snapshot.Service(demoHost) != nil || u.Snapshot.Version != 5 {
		t.Errorf("version %d; want 5 without the service", u.Snapshot.Version)
	}

	// An object that is bad from the start is skipped; nothing is kept for it.
	writeFile(t, path, strings.Replace(good, "resolution: STATIC", "resolution: STATIC\n  sneaky: true", 1))
	u = scan(t, s)
	if u.Snapshot.Service(demoHost) != nil {
		t.Errorf("a ServiceEntry that never was good is served")
	}
}

// wantProblems fails unless problems are exactly those starting with the given texts, after the
// folder's path, in order.
func wantProblems(t *testing.T, problems []model.Problem, prefixes ...string) {
	t.Helper()
	ok := len(problems) == len(prefixes)
	for i := 0; ok && i < len(prefixes); i++ {
		ok = strings.Contains(problems[i].String(), "/"+prefixes[i])
	}
	if !ok {
		t.Errorf("problems:\n%s\nwant:\n  %s", problemLines(problems), strings.Join(prefixes, "\n  "))
	}
}

func TestFolderLayout(t *testing.T) {
	dir := t.TempDir()
	se := func(name string) string {
		return "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: " + name + "}\n" +
			"spec: {hosts: [" + name + ".example], ports: [{number: 20880, name: tcp-dubbo}], resolution: STATIC, " +
			"endpoints: [{address: 127.0.0.1}]}\n"
	}
	for path, content := range map[string]string{
		"top.yaml":              se("top"),
		"sub/deeper/nested.YML": se("nested"),
		"notes.txt":             se("text"),
		".hidden.yaml":          se("hidden"),
		".git/config.yaml":      se("git"),
		"..data/cm.yaml":        se("configmap"),
		"zz-dup.yaml":           se("top"), // the same object again, in a later file
	} {
		full := filepath.Join(dir, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, full, content)
	}
	// A ConfigMap mounts each key as a link into its hidden folder: the link is read.
	if err := os.Symlink(filepath.Join("..data", "cm.yaml"), filepath.Join(dir, "cm.yaml")); err != nil {
		t.Fatal(err)
	}
	u := scan(t, file.New(dir, opts))
	var hosts []string
	for _, svc := range u.Snapshot.Services {
		hosts = append(hosts, svc.Host)
	}
	if got := strings.Join(hosts, " "); got != "configmap.example nested.example top.example" {
		t.Errorf("hosts %q", got)
	}
	wantProblems(t, u.Problems, "zz-dup.yaml: ServiceEntry default/top: ServiceEntry default/top is already defined in "+
		filepath.Join(dir, "top.yaml"))
	if u.Snapshot.Service("top.example").Entry.Origin.File != filepath.Join(dir, "top.yaml") {
		t.Errorf("duplicate won over the first in file order")
	}
}

func TestScanMissingFolder(t *testing.T) {
	if _, err := file.New(filepath.Join(t.TempDir(), "nope"), opts).Scan(); err == nil {
		t.Errorf("no error for a missing folder")
	}
}

func TestScanKeepsServingWhenTheFolderGoes(t *testing.T) {
	dir := copyValid(t)
	s := file.New(dir, opts)
	first := scan(t, s)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	u, err := s.Scan()
	if err == nil {
		t.Fatalf("no error for a folder that is gone")
	}
	if u.Snapshot != first.Snapshot {
		t.Errorf("snapshot changed")
	}
	wantProblems(t, u.Problems, filepath.Base(dir)+": cannot read the folder")
	if again, _ := s.Scan(); len(again.Problems) != 1 {
		t.Errorf("problems pile up: %d", len(again.Problems))
	}
}
