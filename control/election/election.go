// Package election lets several replicas of the controller run side by side: all of them serve xDS,
// and the one that holds a coordination.k8s.io Lease also runs the singletons, what only one replica
// may do at a time (writing status conditions, recording allocated addresses, patching webhook
// configurations). When the holder goes away, another replica takes the Lease over and starts them.
//
// It is client-go's leader election (leaderelection with a LeaseLock), run so that the singletons
// have stopped before the Lease is released: a replica shutting down hands over at once, and never
// writes after its successor has started.
package election

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Client-go's defaults, which Kubernetes' own controllers use.
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// Options configure an Elector; zero durations take the defaults above.
type Options struct {
	// Namespace and Name are those of the Lease.
	Namespace, Name string
	// Identity names this replica in the Lease; NewIdentity() when empty. Replicas must have distinct ones.
	Identity string
	// LeaseDuration is how long a Lease not renewed stays held: how long the replicas wait to take over
	// from one that vanished without releasing it.
	LeaseDuration time.Duration
	// RenewDeadline is how long the holder keeps trying to renew before it gives the singletons up.
	RenewDeadline time.Duration
	// RetryPeriod is how often the replicas try to take the Lease, and the holder to renew it.
	RetryPeriod time.Duration
	// Logger receives changes of leader (Info) and singletons that stop on their own (Error).
	Logger *slog.Logger
}

// Elector competes for one Lease on behalf of one replica.
type Elector struct {
	opts    Options
	lock    resourcelock.Interface
	leading atomic.Bool
	leader  atomic.Pointer[string]
}

// New returns an elector for the Lease of opts in the cluster cfg talks to. It does not contact the
// cluster.
func New(cfg *rest.Config, opts Options) (*Elector, error) {
	if opts.Namespace == "" || opts.Name == "" {
		return nil, errors.New("election: the Lease's namespace and name are required")
	}
	opts.Identity = cmp.Or(opts.Identity, NewIdentity())
	opts.LeaseDuration = cmp.Or(opts.LeaseDuration, DefaultLeaseDuration)
	opts.RenewDeadline = cmp.Or(opts.RenewDeadline, DefaultRenewDeadline)
	opts.RetryPeriod = cmp.Or(opts.RetryPeriod, DefaultRetryPeriod)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	// client-go's own rules: a holder must give up before others may take over, and retry in between.
	if opts.LeaseDuration <= opts.RenewDeadline {
		return nil, fmt.Errorf("election: the lease duration (%v) must be longer than the renew deadline (%v)",
			opts.LeaseDuration, opts.RenewDeadline)
	}
	if float64(opts.RenewDeadline) <= leaderelection.JitterFactor*float64(opts.RetryPeriod) {
		return nil, fmt.Errorf("election: the renew deadline (%v) must be longer than %v times the retry period (%v)",
			opts.RenewDeadline, leaderelection.JitterFactor, opts.RetryPeriod)
	}
	// A request that hangs must not outlast the renew deadline, or a holder could lose the Lease
	// without noticing in time.
	cfg = rest.CopyConfig(cfg)
	cfg.Timeout = max(time.Second, opts.RenewDeadline/2)
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("election: %w", err)
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: opts.Namespace, Name: opts.Name},
		Client:     cs.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: opts.Identity},
	}
	return &Elector{opts: opts, lock: lock}, nil
}

// Identity is the name this replica holds the Lease under.
func (e *Elector) Identity() string { return e.opts.Identity }

// Leading reports whether this replica holds the Lease and runs the singletons.
func (e *Elector) Leading() bool { return e.leading.Load() }

// Leader is the identity of the holder of the Lease, as last seen; empty before any is seen.
func (e *Elector) Leader() string {
	if l := e.leader.Load(); l != nil {
		return *l
	}
	return ""
}

// Run competes for the Lease until ctx ends. Whenever this replica holds it, lead runs with a context
// that ends when the Lease is lost or ctx ends; the Lease is released only once lead has returned. A
// lead that returns on its own gives the Lease up, and the replica stands again. Run returns nil once
// ctx has ended and lead has returned.
func (e *Elector) Run(ctx context.Context, lead func(context.Context) error) error {
	for ctx.Err() == nil {
		gaveUp, err := e.term(ctx, lead)
		if err != nil {
			return err
		}
		if gaveUp {
			// Let another replica take the Lease before standing again.
			t := time.NewTimer(e.opts.LeaseDuration)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
	}
	return nil
}

// term runs one candidacy: until the Lease is lost, given up (gaveUp), or ctx ends.
func (e *Elector) term(ctx context.Context, lead func(context.Context) error) (gaveUp bool, err error) {
	// The election outlives ctx a little: it must not release the Lease before lead has returned.
	electCtx, stopElection := context.WithCancel(context.WithoutCancel(ctx))
	defer stopElection()
	var (
		mu       sync.Mutex
		started  bool
		stopping bool
		failed   atomic.Bool
		leadDone = make(chan struct{})
	)
	// stop ends the candidacy once lead, if it started, has returned.
	stop := func() {
		mu.Lock()
		stopping = true
		wasStarted := started
		mu.Unlock()
		if wasStarted {
			<-leadDone
		}
		stopElection()
	}
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            e.lock,
		LeaseDuration:   e.opts.LeaseDuration,
		RenewDeadline:   e.opts.RenewDeadline,
		RetryPeriod:     e.opts.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            e.opts.Namespace + "/" + e.opts.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(leaseCtx context.Context) {
				mu.Lock()
				if stopping {
					mu.Unlock()
					return
				}
				started = true
				mu.Unlock()
				defer close(leadDone)
				leadCtx, cancel := context.WithCancel(leaseCtx)
				defer cancel()
				defer context.AfterFunc(ctx, cancel)()
				e.leading.Store(true)
				e.opts.Logger.Info("election: leading; running the singletons", "lease", e.lock.Describe(), "identity", e.opts.Identity)
				err := lead(leadCtx)
				e.leading.Store(false)
				if leadCtx.Err() == nil {
					// The singletons stopped while the Lease is still held: give it to a replica that can run them.
					e.opts.Logger.Error("election: the singletons stopped; giving the Lease up", "lease", e.lock.Describe(), "error", err)
					failed.Store(true)
					go stop()
				}
			},
			OnStoppedLeading: func() {},
			OnNewLeader: func(identity string) {
				e.leader.Store(&identity)
				e.opts.Logger.Info("election: new leader", "lease", e.lock.Describe(), "leader", identity,
					"self", identity == e.opts.Identity)
			},
		},
	})
	if err != nil {
		return false, fmt.Errorf("election: %w", err)
	}
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-ctx.Done():
			stop()
		case <-finished:
		}
	}()
	le.Run(electCtx)
	// Lost or given up: lead has been told to stop; the next candidacy waits for it.
	mu.Lock()
	stopping = true
	wasStarted := started
	mu.Unlock()
	if wasStarted {
		<-leadDone
	}
	return failed.Load(), nil
}

// NewIdentity returns a name for this replica that no other has: the host name (a pod's name) and a
// random suffix, so that two processes on one host, or a restarted one, are told apart.
func NewIdentity() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "meltemi"
	}
	host = strings.Trim(invalidName.ReplaceAllString(strings.ToLower(host), "-"), "-.")
	if len(host) > 50 {
		host = host[:50]
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}

// invalidName matches what an object name may not hold, so that an identity can name objects too.
var invalidName = regexp.MustCompile(`[^a-z0-9.-]+`)
