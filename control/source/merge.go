package source

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/meltemi-mesh/meltemi/control/model"
)

// Runner is a source: it publishes updates until its context ends.
type Runner interface {
	Run(ctx context.Context, publish func(Update)) error
}

// Merge runs several sources side by side (a folder and a cluster, say) and publishes one update for
// all of them: a snapshot built from the objects of all their snapshots, so that objects of one may
// refer to objects of another (a MetaRouter in a folder routing a cluster's Service), with the
// problems each source found in single objects and those Build finds relating them all. Where two
// objects compete, the usual order decides: objects from files, in file order, before cluster objects,
// oldest first.
type Merge struct {
	sources []Runner
	opts    model.Options
}

// NewMerge returns a merge of sources whose snapshot is built with opts.
func NewMerge(opts model.Options, sources ...Runner) *Merge {
	return &Merge{sources: sources, opts: opts}
}

// Run runs every source until ctx ends or one of them fails, which stops the others. It publishes a
// first update once every source has published its first, then one after each update of a source
// that changes the merged snapshot or problems; publish is called from Run's goroutine, one update
// at a time.
func (m *Merge) Run(ctx context.Context, publish func(Update)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu      sync.Mutex
		latest  = make([]*Update, len(m.sources))
		changed = make(chan struct{}, 1)
	)
	errs := make(chan error, len(m.sources))
	var wg sync.WaitGroup
	for i, src := range m.sources {
		wg.Go(func() {
			err := src.Run(ctx, func(u Update) {
				mu.Lock()
				latest[i] = &u
				mu.Unlock()
				select {
				case changed <- struct{}{}:
				default:
				}
			})
			if err != nil {
				err = fmt.Errorf("source %d of %d: %w", i+1, len(m.sources), err)
			}
			errs <- err
			cancel() // one source stopping stops the merge
		})
	}
	defer wg.Wait()

	var (
		version  uint64
		snap     *model.Snapshot
		problems []model.Problem
	)
	for {
		select {
		case <-ctx.Done():
			cancel()
			wg.Wait()
			close(errs)
			var all []error
			for err := range errs {
				all = append(all, err)
			}
			return errors.Join(all...)
		case <-changed:
		}
		mu.Lock()
		updates := slices.Clone(latest)
		mu.Unlock()
		if slices.Contains(updates, nil) {
			continue // not every source has read its input yet: a partial config is not served
		}
		var objs model.Objects
		var single []model.Problem
		for _, u := range updates {
			for _, obj := range u.Snapshot.Objects.All() {
				objs.Add(obj)
			}
			single = append(single, withoutBuildProblems(u.Problems, u.Snapshot.Problems)...)
		}
		update := false
		if hash := objs.Hash(); snap == nil || hash != snap.Hash {
			version++
			snap = model.Build(version, objs, m.opts)
			update = true
		}
		merged := append(single, snap.Problems...)
		model.SortProblems(merged)
		if !slices.Equal(merged, problems) {
			update = true
		}
		problems = merged
		if update {
			publish(Update{Snapshot: snap, Problems: problems})
		}
	}
}

// withoutBuildProblems returns the problems of an update that are not those of its own snapshot's
// Build (which the merged Build finds again, or not, once all objects are together): the problems of
// single objects, and the source's own.
func withoutBuildProblems(all, built []model.Problem) []model.Problem {
	left := map[model.Problem]int{}
	for _, p := range built {
		left[p]++
	}
	var out []model.Problem
	for _, p := range all {
		if left[p] > 0 {
			left[p]--
			continue
		}
		out = append(out, p)
	}
	return out
}
