package source_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/source"
)

var opts = model.Options{Codecs: model.Codecs{"dubbo": "aeraki.meta_protocol.codec.dubbo"}, Local: true}

// fakeSource publishes the updates it is sent, as a source reading its input would, until its
// context ends or it is told to fail.
type fakeSource struct {
	updates chan source.Update
	fail    chan error
}

func newFake() *fakeSource {
	return &fakeSource{updates: make(chan source.Update), fail: make(chan error, 1)}
}

func (f *fakeSource) Run(ctx context.Context, publish func(source.Update)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-f.fail:
			return err
		case u := <-f.updates:
			publish(u)
		}
	}
}

// update is what a source reading these manifests (origin file, documents in order) publishes.
func update(t *testing.T, origin string, manifests ...string) source.Update {
	t.Helper()
	var objs model.Objects
	var problems []model.Problem
	for i, m := range manifests {
		js, err := yaml.YAMLToJSON([]byte(m))
		if err != nil {
			t.Fatal(err)
		}
		obj, _, p := model.Decode(model.Origin{File: origin, Document: i + 1}, js)
		problems = append(problems, p...)
		if obj != nil {
			objs.Add(obj)
		}
	}
	snap := model.Build(1, objs, opts)
	return source.Update{Snapshot: snap, Problems: append(problems, snap.Problems...)}
}

const (
	entry = `{apiVersion: networking.istio.io/v1, kind: ServiceEntry, metadata: {name: demo},
		spec: {hosts: [demo.example], ports: [{number: 20880, name: tcp-dubbo}], resolution: STATIC, endpoints: [{address: 10.0.0.1}]}}`
	router = `{apiVersion: metaprotocol.aeraki.io/v1alpha1, kind: MetaRouter, metadata: {name: demo},
		spec: {hosts: [demo.example], routes: [{name: all, route: [{destination: {host: demo.example}}]}]}}`
	badRouter = `{apiVersion: metaprotocol.aeraki.io/v1alpha1, kind: MetaRouter, metadata: {name: bad},
		spec: {hosts: [a, b], routes: [{name: all, route: [{destination: {host: a}}]}]}}`
)

func TestMergeBuildsOneSnapshotFromAllSources(t *testing.T) {
	files, cluster := newFake(), newFake()
	published := make(chan source.Update, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- source.NewMerge(opts, files, cluster).Run(ctx, func(u source.Update) { published <- u })
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	next := func(what string) source.Update {
		t.Helper()
		select {
		case u := <-published:
			return u
		case <-time.After(10 * time.Second):
			t.Fatalf("no update: %s", what)
		}
		return source.Update{}
	}

	// The router on its own warns that its host is unknown; with the entry from the other source,
	// it routes it, and that warning is gone. Nothing is published before both sources have spoken.
	alone := update(t, "routes.yaml", router, badRouter)
	if !strings.Contains(problemText(alone), `no ServiceEntry defines host "demo.example"`) {
		t.Fatalf("the router alone should warn about its host:\n%s", problemText(alone))
	}
	files.updates <- alone
	select {
	case u := <-published:
		t.Fatalf("published before every source had: %s", problemText(u))
	default:
	}
	cluster.updates <- update(t, "kube:ServiceEntry default/demo", entry)
	u := next("both sources")
	svc := u.Snapshot.Service("demo.example")
	if svc == nil || svc.Router == nil || svc.Router.Name != "demo" {
		t.Fatalf("merged service %+v", svc)
	}
	text := problemText(u)
	if strings.Contains(text, "no ServiceEntry defines host") || !strings.Contains(text, "exactly one host is required, found 2") {
		t.Errorf("merged problems: the bad router's error kept, the stale warning dropped; got:\n%s", text)
	}
	first := u.Snapshot.Version

	// A source publishing the same objects again changes nothing.
	cluster.updates <- update(t, "kube:ServiceEntry default/demo", entry)
	// A change in one source is a new merged snapshot.
	files.updates <- update(t, "routes.yaml", badRouter)
	u = next("the router removed")
	if u.Snapshot.Version != first+1 || u.Snapshot.Service("demo.example").Router != nil {
		t.Errorf("after the router went: version %d (want %d), router %v", u.Snapshot.Version, first+1,
			u.Snapshot.Service("demo.example").Router)
	}
}

func TestMergeStopsWhenASourceFails(t *testing.T) {
	a, b := newFake(), newFake()
	done := make(chan error, 1)
	go func() { done <- source.NewMerge(opts, a, b).Run(context.Background(), func(source.Update) {}) }()
	a.fail <- errors.New("folder gone")
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "source 1 of 2: folder gone") {
			t.Errorf("Run returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return when a source failed")
	}
}

func problemText(u source.Update) string {
	var b strings.Builder
	for _, p := range u.Problems {
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	return b.String()
}
