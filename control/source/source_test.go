package source

import (
	"testing"
	"time"
)

func TestDebounceWait(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const quiet, maxDelay = 100 * time.Millisecond, time.Second
	tests := []struct {
		name  string
		since time.Duration // from the first trigger to now
		want  time.Duration
	}{
		{"first trigger waits the quiet period", 0, quiet},
		{"a later trigger restarts the quiet period", 500 * time.Millisecond, quiet},
		{"near the bound the wait shrinks", 950 * time.Millisecond, 50 * time.Millisecond},
		{"at the bound it fires at once", time.Second, 0},
		{"past the bound it fires at once", 3 * time.Second, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := debounceWait(t0.Add(tt.since), t0, quiet, maxDelay); got != tt.want {
				t.Errorf("wait = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDebouncerFiresOncePerBurst(t *testing.T) {
	d := NewDebouncer(20*time.Millisecond, 200*time.Millisecond)
	defer d.Stop()
	for range 10 {
		d.Trigger()
	}
	select {
	case <-d.C():
		d.Fired()
	case <-time.After(5 * time.Second):
		t.Fatal("debouncer did not fire")
	}
	select {
	case <-d.C():
		t.Fatal("debouncer fired twice for one burst")
	default:
	}
	// A new burst fires again.
	d.Trigger()
	select {
	case <-d.C():
		d.Fired()
	case <-time.After(5 * time.Second):
		t.Fatal("debouncer did not fire for the second burst")
	}
}

func TestDebouncerBoundsTheDelay(t *testing.T) {
	// Triggers that never pause would postpone a pure quiet-period debouncer forever.
	d := NewDebouncer(time.Hour, 50*time.Millisecond)
	defer d.Stop()
	d.Trigger()
	deadline := time.After(5 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-d.C():
			return
		case <-tick.C:
			d.Trigger()
		case <-deadline:
			t.Fatal("debouncer never fired under steady triggers")
		}
	}
}
