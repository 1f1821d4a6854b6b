package kubeinterop

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/source"
	"github.com/meltemi-mesh/meltemi/control/source/file"
	"github.com/meltemi-mesh/meltemi/control/translate"
	"github.com/meltemi-mesh/meltemi/test/kube/kubetest"
)

var update = flag.Bool("update", false, "rewrite the golden files from the file source's output")

// parityCases are the folders under testdata/parity. Each has cluster/, the manifests applied to the
// API server for the kube source, and files/, the folder the file source reads (cluster/ itself when
// there is no files/). Both must translate to xds.golden.json.
var parityCases = []struct{ name, about string }{
	{"istio-and-aeraki", "every kind both sources read, in every apiVersion, written alike for both"},
	{"service", "a Service with its EndpointSlice, pods and nodes, against the ServiceEntry it stands for"},
}

// TestSameXDSFromFilesAndCluster is the proof that the two sources feed one model: the same objects,
// read from a folder or from a cluster, translate to the same xDS, byte for byte. The file half runs
// everywhere (and -update rewrites the golden files from it); the cluster half needs the API server.
func TestSameXDSFromFilesAndCluster(t *testing.T) {
	for _, tc := range parityCases {
		t.Run("files/"+tc.name, func(t *testing.T) {
			dir := filepath.Join("testdata", "parity", tc.name)
			u := readFiles(t, dir)
			noErrors(t, u)
			got := xdsJSON(t, u.Snapshot)
			golden := filepath.Join(dir, "xds.golden.json")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (go test -run TestSameXDSFromFilesAndCluster -update writes it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s (%s) differs from the file source's xDS; run with -update and review the diff:\n%s",
					golden, tc.about, firstDifference(want, got))
			}
		})
	}

	c := kubetest.Start(t)
	for _, tc := range parityCases {
		t.Run("cluster/"+tc.name, func(t *testing.T) {
			dir := filepath.Join("testdata", "parity", tc.name)
			want, err := os.ReadFile(filepath.Join(dir, "xds.golden.json"))
			if err != nil {
				t.Fatal(err)
			}
			manifests, err := filepath.Glob(filepath.Join(dir, "cluster", "*.yaml"))
			if err != nil || len(manifests) == 0 {
				t.Fatalf("no manifests in %s/cluster (%v)", dir, err)
			}
			for _, m := range manifests {
				text, err := os.ReadFile(m)
				if err != nil {
					t.Fatal(err)
				}
				c.Apply(t, model.DefaultNamespace, string(text))
			}
			wantPolicies := policies(readFiles(t, dir).Snapshot)
			src := runSource(t, c.Config, nil)
			// The cache may publish before every object applied above has reached it; the translation
			// converges on the golden file, or the difference is shown.
			var got []byte
			deadline := time.Now().Add(waitLimit)
			for delay := time.Millisecond; ; delay = min(2*delay, 100*time.Millisecond) {
				u := src.last()
				if u.Snapshot != nil {
					if got = xdsJSON(t, u.Snapshot); bytes.Equal(got, want) && slices.Equal(policies(u.Snapshot), wantPolicies) {
						noErrors(t, u)
						return
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("the kube source's xDS (%s) never matched %s/xds.golden.json:\n%s\nobjects besides services: %q, "+
						"from files %q\nproblems:\n%s", tc.about, dir, firstDifference(want, got), policies(u.Snapshot),
						wantPolicies, strings.Join(problemsOf(u), "\n"))
				}
				time.Sleep(delay)
			}
		})
	}
}

// TestParityCasesListed keeps the table and the folders in step, so that no case is silently skipped.
func TestParityCasesListed(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join("testdata", "parity"))
	if err != nil {
		t.Fatal(err)
	}
	var dirs, listed []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	for _, tc := range parityCases {
		listed = append(listed, tc.name)
	}
	slices.Sort(listed)
	if !slices.Equal(dirs, listed) {
		t.Errorf("testdata/parity folders %v, cases %v", dirs, listed)
	}
}

// readFiles reads a case's files/ folder (its cluster/ folder when it has none) with the file source.
func readFiles(t *testing.T, dir string) source.Update {
	t.Helper()
	filesDir := filepath.Join(dir, "files")
	if _, err := os.Stat(filesDir); err != nil {
		filesDir = filepath.Join(dir, "cluster")
	}
	u, err := file.New(filesDir, file.Options{Model: model.Options{Codecs: modelCodecs(t), Local: true}}).Scan()
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func noErrors(t *testing.T, u source.Update) {
	t.Helper()
	for _, p := range u.Problems {
		if p.Severity == model.SeverityError {
			t.Errorf("%s", p)
		} else {
			t.Logf("%s", p)
		}
	}
}

// policies names the objects of a snapshot that are not services, which both sources must hold alike
// (a cluster also holds Services of its own, such as default/kubernetes), including those no xDS
// shows yet (the Redis and Dubbo kinds).
func policies(snap *model.Snapshot) []string {
	if snap == nil {
		return nil
	}
	var out []string
	for _, obj := range snap.Objects.All() {
		if _, isService := obj.(*model.ServiceEntry); !isService {
			out = append(out, obj.Metadata().Key().String())
		}
	}
	slices.Sort(out)
	return out
}

// xdsJSON is what a local-mode proxy is sent for a snapshot: each resource type as a JSON array of
// resources wrapped in an Any, as a discovery response carries them. protojson varies its whitespace
// on purpose; re-indenting with encoding/json makes the text stable.
func xdsJSON(t *testing.T, snap *model.Snapshot) []byte {
	t.Helper()
	res, err := translate.Translate(snap, translate.Node{ID: "parity", Mode: translate.Local})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, list := range []struct {
		name string
		msgs []proto.Message
	}{
		{"listeners", messages(res.Listeners)}, {"routes", messages(res.Routes)},
		{"clusters", messages(res.Clusters)}, {"endpoints", messages(res.Endpoints)},
	} {
		if i > 0 {
			buf.WriteByte(',')
		}
		fmt.Fprintf(&buf, "%q:[", list.name)
		for j, m := range list.msgs {
			a, err := anypb.New(m)
			if err != nil {
				t.Fatal(err)
			}
			js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(a)
			if err != nil {
				t.Fatal(err)
			}
			if j > 0 {
				buf.WriteByte(',')
			}
			buf.Write(js)
		}
		buf.WriteByte(']')
	}
	buf.WriteByte('}')
	var out bytes.Buffer
	if err := json.Indent(&out, buf.Bytes(), "", "  "); err != nil {
		t.Fatal(err)
	}
	out.WriteByte('\n')
	return out.Bytes()
}

func messages[M proto.Message](list []M) []proto.Message {
	out := make([]proto.Message, len(list))
	for i, m := range list {
		out[i] = m
	}
	return out
}

// firstDifference shows the first line that differs, with a little context.
func firstDifference(want, got []byte) string {
	w, g := strings.Split(string(want), "\n"), strings.Split(string(got), "\n")
	for i := 0; i < max(len(w), len(g)); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			from := max(0, i-3)
			return fmt.Sprintf("line %d:\n  context: %s\n  want: %q\n  got:  %q", i+1,
				strings.Join(g[from:min(i, len(g))], "\n           "), wl, gl)
		}
	}
	return "(no difference)"
}
