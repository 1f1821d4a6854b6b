package localratelimit

import (
	"sync/atomic"
	"time"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/proxy/filter"
	"github.com/meltemi-mesh/meltemi/proxy/filter/headermatch"
)

// overLimitDetail is the text of the local reply; the codec decides how it reaches the client.
const overLimitDetail = "local rate limit exceeded"

// limiter is the filter: one per listener config, shared by all of that listener's connections.
type limiter struct {
	conditions []condition
	global     *bucket // nil: requests that no condition selects pass
	now        func() time.Duration
}

// condition gives the requests its matchers all select their own bucket.
type condition struct {
	match  headermatch.All // empty: every request
	bucket *bucket
}

var _ filter.Filter = (*limiter)(nil)

// OnRequest takes a token from the bucket of the first condition the request matches, else from the global
// bucket, and answers the request itself when that bucket is empty.
func (l *limiter) OnRequest(ex filter.Exchange) filter.Status {
	b := l.bucketFor(&ex.Request().Metadata)
	if b == nil || b.take(l.now()) {
		return filter.Continue
	}
	ex.Reply(codec.OverLimit, overLimitDetail)
	return filter.Stop
}

// bucketFor returns the bucket a request draws from, or nil when it is not limited.
func (l *limiter) bucketFor(md *codec.Metadata) *bucket {
	for i := range l.conditions {
		if c := &l.conditions[i]; c.match.Matches(md) {
			return c.bucket
		}
	}
	return l.global
}

// bucket is a token bucket that fills tokensPerFill tokens at the end of each fill interval, up to max,
// counted from the filter's creation (as Envoy's fill timer does), and starts full.
//
// Its whole state is one counter, so a take is a single compare-and-swap and nothing runs between requests:
// fills are computed from the clock when a request comes. With k intervals elapsed, k*fill tokens have been
// credited since the start; spent is the credit already used or forfeited, so min(max, k*fill - spent) tokens
// are available. Forfeiting is how the cap works: a take from a full bucket moves spent up to k*fill - max, as
// if the tokens beyond max had never been added. newBucket keeps fill at most one token a nanosecond, so
// k*fill stays below the elapsed nanoseconds and cannot overflow for 292 years.
type bucket struct {
	max      int64
	fill     int64 // tokens per interval, at most max
	interval time.Duration
	_        [64 - 24]byte
	// spent lives alone on its cache line (the struct is 128 bytes, and the allocator aligns it so), so that
	// takes from one bucket do not slow requests reading another.
	spent atomic.Int64
	_     [64 - 8]byte
}

func newFullBucket(maxTokens, fill int64, interval time.Duration) *bucket {
	b := &bucket{max: maxTokens, fill: fill, interval: interval}
	b.spent.Store(-maxTokens)
	return b
}

// take removes a token if there is one at time now, measured from the filter's creation.
func (b *bucket) take(now time.Duration) bool {
	credit := int64(now/b.interval) * b.fill
	for {
		spent := b.spent.Load()
		avail := min(credit-spent, b.max)
		if avail < 1 {
			return false
		}
		// A goroutine that read the clock earlier may lose this race to one that read it later; it then
		// sees fewer fills than there were, and at worst refuses a request a moment early. It never grants
		// more: every take moves spent up by at least one, and spent never passes the credit.
		if b.spent.CompareAndSwap(spent, credit-avail+1) {
			return true
		}
	}
}
