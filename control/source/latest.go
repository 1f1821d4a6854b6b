package source

import "sync"

// Latest holds the last update of a source for consumers that work at their own pace beside the xDS
// server (status conditions, address allocation): each reads the last update and waits for the next,
// never holding up the source. The zero value is ready to use.
type Latest struct {
	mu   sync.Mutex
	u    Update
	has  bool
	next chan struct{}
}

// Publish makes u the last update and wakes up those waiting for one.
func (l *Latest) Publish(u Update) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.u, l.has = u, true
	if l.next != nil {
		close(l.next)
		l.next = nil
	}
}

// Get returns the last update, whether there is one yet, and a channel closed once a newer one is
// published.
func (l *Latest) Get() (Update, bool, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.next == nil {
		l.next = make(chan struct{})
	}
	return l.u, l.has, l.next
}
