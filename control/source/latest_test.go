package source

import (
	"testing"

	"github.com/meltemi-mesh/meltemi/control/model"
)

func TestLatest(t *testing.T) {
	var l Latest
	if _, ok, _ := l.Get(); ok {
		t.Fatal("an update before any was published")
	}
	_, _, next := l.Get()
	first := Update{Snapshot: &model.Snapshot{Version: 1}}
	l.Publish(first)
	select {
	case <-next:
	default:
		t.Fatal("publishing did not wake up the waiter")
	}
	u, ok, next := l.Get()
	if !ok || u.Snapshot.Version != 1 {
		t.Fatalf("got %+v, %v", u, ok)
	}
	select {
	case <-next:
		t.Fatal("woken up with nothing new")
	default:
	}
	l.Publish(Update{Snapshot: &model.Snapshot{Version: 2}})
	<-next
	if u, _, _ := l.Get(); u.Snapshot.Version != 2 {
		t.Errorf("version %d, want 2", u.Snapshot.Version)
	}
}
