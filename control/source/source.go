// Package source holds what config sources share: the update a source publishes, the debouncer
// that turns a burst of changes into one update, and Merge, which serves several sources as one. Each
// source (file, kube, and later registries) is a sub-package that turns its input into model objects
// and nothing else.
package source

import (
	"time"

	"github.com/meltemi-mesh/meltemi/control/model"
)

// Update is what a source publishes: the snapshot to serve and every problem known now. A source
// publishes when either changes; when only the problems did (a file turned bad and its objects keep
// their last good version), Snapshot is the same as in the previous update, so a consumer pushes
// config only when Snapshot.Version changes.
type Update struct {
	Snapshot *model.Snapshot
	// Problems are the problems of single objects found by the source and those of Snapshot, sorted
	// by file.
	Problems []model.Problem
}

// Debouncer turns a burst of triggers into one firing: it fires once no trigger has come for the
// quiet period, or once the maximum delay has passed since the first trigger of the burst, whichever
// is first, so that a steady stream of changes still gets through. It is meant for one goroutine's
// select loop: Trigger on each change, receive from C, then call Fired.
type Debouncer struct {
	quiet, max time.Duration
	timer      *time.Timer
	first      time.Time // start of the current burst; zero when idle
}

// NewDebouncer returns an idle debouncer.
func NewDebouncer(quiet, maxDelay time.Duration) *Debouncer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &Debouncer{quiet: quiet, max: maxDelay, timer: t}
}

// Trigger records a change.
func (d *Debouncer) Trigger() {
	now := time.Now()
	if d.first.IsZero() {
		d.first = now
	}
	d.timer.Reset(debounceWait(now, d.first, d.quiet, d.max))
}

// C delivers a value when the burst is over.
func (d *Debouncer) C() <-chan time.Time { return d.timer.C }

// Fired ends the burst, after a value was received from C.
func (d *Debouncer) Fired() { d.first = time.Time{} }

// Stop releases the timer.
func (d *Debouncer) Stop() { d.timer.Stop() }

// debounceWait is how long to wait, at now, before firing for a burst that started at first.
func debounceWait(now, first time.Time, quiet, maxDelay time.Duration) time.Duration {
	return max(0, min(quiet, first.Add(maxDelay).Sub(now)))
}
