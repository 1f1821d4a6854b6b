package file_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/source"
	"github.com/meltemi-mesh/meltemi/control/source/file"
)

// deadline bounds every wait; generous, because the machine running the tests may be busy.
const deadline = 10 * time.Second

// run starts a source on dir and returns its updates. The source stops when the test ends.
func run(t *testing.T, dir string) <-chan source.Update {
	t.Helper()
	updates := make(chan source.Update, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- file.New(dir, opts).Run(ctx, func(u source.Update) { updates <- u }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(deadline):
			t.Errorf("Run did not return after cancel")
		}
	})
	return updates
}

// next waits for an update that satisfies cond and returns it with the number of updates received
// before it.
func next(t *testing.T, updates <-chan source.Update, what string, cond func(*model.Snapshot) bool) (source.Update, int) {
	t.Helper()
	timeout := time.After(deadline)
	for skipped := 0; ; skipped++ {
		select {
		case u := <-updates:
			if cond(u.Snapshot) {
				return u, skipped
			}
		case <-timeout:
			t.Fatalf("no update with %s within %v", what, deadline)
		}
	}
}

func endpointPort(s *model.Snapshot, i int) uint32 {
	svc := s.Service(demoHost)
	if svc == nil || len(svc.Ports) == 0 || len(svc.Ports[0].Endpoints) <= i {
		return 0
	}
	return svc.Ports[0].Endpoints[i].Port
}

func TestWatchPublishesChanges(t *testing.T) {
	dir := copyValid(t)
	path := filepath.Join(dir, "dubbo-demo.yaml")
	good := readFile(t, path)
	updates := run(t, dir)
	first, _ := next(t, updates, "the first snapshot", func(s *model.Snapshot) bool { return endpointPort(s, 1) == 20882 })
	version := first.Snapshot.Version

	newer := func(u source.Update) {
		t.Helper()
		if u.Snapshot.Version <= version {
			t.Errorf("version %d after %d", u.Snapshot.Version, version)
		}
		version = u.Snapshot.Version
	}

	t.Run("write in place", func(t *testing.T) {
		writeFile(t, path, strings.Replace(good, "20882", "21000", 1))
		u, _ := next(t, updates, "port 21000", func(s *model.Snapshot) bool { return endpointPort(s, 1) == 21000 })
		newer(u)
	})

	t.Run("new file renamed over the old one", func(t *testing.T) {
		tmp := filepath.Join(dir, "dubbo-demo.yaml.tmp-12345")
		writeFile(t, tmp, strings.Replace(good, "20882", "22000", 1))
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
		u, _ := next(t, updates, "port 22000", func(s *model.Snapshot) bool { return endpointPort(s, 1) == 22000 })
		newer(u)
	})

	t.Run("file in a new folder", func(t *testing.T) {
		sub := filepath.Join(dir, "more", "services")
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		extra := strings.NewReplacer("name: dubbo-demo", "name: extra", demoHost, "extra.example").Replace(good)
		writeFile(t, filepath.Join(sub, "extra.yaml"), extra)
		u, _ := next(t, updates, "extra.example", func(s *model.Snapshot) bool { return s.Service("extra.example") != nil })
		newer(u)
	})

	t.Run("delete", func(t *testing.T) {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		u, _ := next(t, updates, "the service gone", func(s *model.Snapshot) bool { return s.Service(demoHost) == nil })
		newer(u)
	})
}

func TestWatchDebouncesABurst(t *testing.T) {
	dir := copyValid(t)
	path := filepath.Join(dir, "dubbo-demo.yaml")
	good := readFile(t, path)
	updates := run(t, dir)
	next(t, updates, "the first snapshot", func(s *model.Snapshot) bool { return endpointPort(s, 1) == 20882 })

	const writes = 20
	for i := 1; i <= writes; i++ {
		writeFile(t, path, strings.Replace(good, "20882", fmt.Sprint(30000+i), 1))
	}
	_, before := next(t, updates, "the last write", func(s *model.Snapshot) bool { return endpointPort(s, 1) == 30000+writes })
	t.Logf("%d updates before the last write's", before)
	// One update is the goal; a slow machine may split the burst at a quiet gap, but never into many.
	if before > 2 {
		t.Errorf("%d updates before the one with the last write, for a burst of %d writes", before, writes)
	}
}

func TestWatchPublishesProblemsWithoutNewVersion(t *testing.T) {
	dir := copyValid(t)
	path := filepath.Join(dir, "metarouter.yaml")
	good := readFile(t, path)
	updates := run(t, dir)
	first, _ := next(t, updates, "the first snapshot", func(*model.Snapshot) bool { return true })

	writeFile(t, path, strings.Replace(good, "weight: 20", "wieght: 20", 1))
	timeout := time.After(deadline)
	for {
		select {
		case u := <-updates:
			if !model.HasErrors(u.Problems) {
				continue
			}
			if u.Snapshot != first.Snapshot {
				t.Errorf("a router that turned bad changed the snapshot: version %d", u.Snapshot.Version)
			}
			return
		case <-timeout:
			t.Fatalf("no update reporting the misspelt field within %v", deadline)
		}
	}
}

func TestRunNeedsAFolder(t *testing.T) {
	err := file.New(filepath.Join(t.TempDir(), "missing"), opts).Run(context.Background(), func(source.Update) {})
	if err == nil {
		t.Errorf("Run on a missing folder returned no error")
	}
}
