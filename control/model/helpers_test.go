package model_test

import (
	"fmt"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/meltemi-mesh/meltemi/control/model"
)

var dubboOnly = model.Codecs{"dubbo": "aeraki.meta_protocol.codec.dubbo"}

var localOpts = model.Options{Codecs: dubboOnly, Local: true}

// load decodes files, each a string of YAML documents separated by "---" lines, named file1.yaml,
// file2.yaml, ... in the order given, which is their file order.
func load(t *testing.T, files ...string) (model.Objects, []model.Problem) {
	t.Helper()
	var objs model.Objects
	var problems []model.Problem
	for i, f := range files {
		for j, doc := range strings.Split(f, "\n---\n") {
			js, err := yaml.YAMLToJSON([]byte(doc))
			if err != nil {
				t.Fatalf("file %d document %d: %v", i+1, j+1, err)
			}
			obj, _, p := model.Decode(model.Origin{File: fmt.Sprintf("file%d.yaml", i+1), Document: j + 1}, js)
			problems = append(problems, p...)
			if obj != nil {
				objs.Add(obj)
			}
		}
	}
	return objs, problems
}

// build loads files and builds a snapshot, returning decoding and building problems together.
func build(t *testing.T, opts model.Options, files ...string) (*model.Snapshot, []model.Problem) {
	t.Helper()
	objs, problems := load(t, files...)
	snap := model.Build(1, objs, opts)
	return snap, append(problems, snap.Problems...)
}

// mustBuild is build for inputs that must have no problem at all.
func mustBuild(t *testing.T, opts model.Options, files ...string) *model.Snapshot {
	t.Helper()
	snap, problems := build(t, opts, files...)
	for _, p := range problems {
		t.Errorf("unexpected problem: %s", p)
	}
	return snap
}

// wantProblem fails unless problems hold one of the severity whose field is field and whose message
// contains msg.
func wantProblem(t *testing.T, problems []model.Problem, sev model.Severity, field, msg string) model.Problem {
	t.Helper()
	for _, p := range problems {
		if p.Severity == sev && p.Field == field && strings.Contains(p.Message, msg) {
			return p
		}
	}
	t.Errorf("no %s at %q containing %q among:\n%s", sev, field, msg, listProblems(problems))
	return model.Problem{}
}

// wantCount fails unless problems hold exactly so many errors and warnings.
func wantCount(t *testing.T, problems []model.Problem, errors, warnings int) {
	t.Helper()
	if e, w := model.Count(problems); e != errors || w != warnings {
		t.Errorf("%d errors and %d warnings, want %d and %d:\n%s", e, w, errors, warnings, listProblems(problems))
	}
}

func listProblems(problems []model.Problem) string {
	var b strings.Builder
	for _, p := range problems {
		fmt.Fprintf(&b, "  %s\n", p)
	}
	return b.String()
}

// serviceEntry is a STATIC dubbo ServiceEntry in namespace demo with one endpoint; extra is added
// to its spec (addresses, say).
func serviceEntry(name, host, extra string) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: %s, namespace: demo}
spec:
  hosts: [%s]
  ports: [{number: 20880, name: tcp-dubbo}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
%s`, name, host, extra)
}

func metaRouter(name, host string) string {
	return fmt.Sprintf(`apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: %s, namespace: demo}
spec:
  hosts: [%s]
  routes: [{name: all, route: [{destination: {host: %s}}]}]
`, name, host, host)
}
