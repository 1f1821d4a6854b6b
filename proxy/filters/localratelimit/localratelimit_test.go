package localratelimit

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/proxy/filter"
)

// fakeClock is the filter's clock in tests: it moves only when a test says so.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Duration      { return time.Duration(c.ns.Load()) }
func (c *fakeClock) set(d time.Duration)     { c.ns.Store(int64(d)) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// exchange is a filter.Exchange that records the local reply.
type exchange struct {
	msg     codec.Message
	replies int
	kind    codec.ErrorKind
	detail  string
}

func (ex *exchange) Request() *codec.Message { return &ex.msg }
func (ex *exchange) Reply(kind codec.ErrorKind, detail string) {
	ex.replies++
	ex.kind, ex.detail = kind, detail
}
func (ex *exchange) Reroute() {}
func (ex *exchange) Resume()  {}

var _ filter.Exchange = (*exchange)(nil)

// request returns an exchange whose metadata holds kv, pairs of keys and values.
func request(kv ...string) *exchange {
	ex := &exchange{}
	for i := 0; i+1 < len(kv); i += 2 {
		ex.msg.Metadata.Set(kv[i], kv[i+1])
	}
	return ex
}

// newTestFilter builds a filter from JSON config on a fake clock.
func newTestFilter(t testing.TB, config string) (*limiter, *fakeClock) {
	t.Helper()
	cfg, err := decode([]byte(config))
	if err != nil {
		t.Fatalf("decode %s: %v", config, err)
	}
	clock := &fakeClock{}
	l, err := build(cfg, clock.now)
	if err != nil {
		t.Fatalf("build %s: %v", config, err)
	}
	return l, clock
}

// allowed sends a request to l and reports whether it passed, checking the reply of one that did not.
func allowed(t *testing.T, l *limiter, ex *exchange) bool {
	t.Helper()
	before := ex.replies
	switch st := l.OnRequest(ex); {
	case st == filter.Continue && ex.replies == before:
		return true
	case st == filter.Stop && ex.replies == before+1:
		if ex.kind != codec.OverLimit || ex.detail != overLimitDetail {
			t.Fatalf("reply %v %q, want %v %q", ex.kind, ex.detail, codec.OverLimit, overLimitDetail)
		}
		return false
	default:
		t.Fatalf("OnRequest returned %v after %d replies; a refusal must reply once and stop", st,
			ex.replies-before)
		return false
	}
}

func TestConfig(t *testing.T) {
	type bucketWant struct {
		max, fill int64
		interval  time.Duration
	}
	tests := []struct {
		name       string
		config     string
		global     *bucketWant
		conditions []bucketWant
		matchers   []int // matchers per condition
	}{
		{name: "empty config passes everything", config: ""},
		{name: "empty object", config: "{}"},
		{
			// What the proxy receives for control/translate's local-ratelimit case: protobuf JSON of the
			// LocalRateLimit, lowerCamelCase.
			name: "as translated from a MetaRouter",
			config: `{"statPrefix":"org.apache.dubbo.samples.basic.api.demoservice",
				"tokenBucket":{"maxTokens":5,"tokensPerFill":5,"fillInterval":"60s"},
				"conditions":[{"match":{"metadata":[{"name":"method","stringMatch":{"exact":"sayHello"}}]},
					"tokenBucket":{"maxTokens":2,"fillInterval":"1s"}}]}`,
			global:     &bucketWant{5, 5, time.Minute},
			conditions: []bucketWant{{2, 1, time.Second}},
			matchers:   []int{1},
		},
		{
			name: "proto field names are accepted too",
			config: `{"stat_prefix":"p","token_bucket":{"max_tokens":3,"tokens_per_fill":2,"fill_interval":"0.5s"},
				"conditions":[{"token_bucket":{"max_tokens":1,"fill_interval":"2s"}}]}`,
			global:     &bucketWant{3, 2, 500 * time.Millisecond},
			conditions: []bucketWant{{1, 1, 2 * time.Second}},
			matchers:   []int{0},
		},
		{
			name:   "a fill larger than the bucket fills the bucket",
			config: `{"tokenBucket":{"maxTokens":4,"tokensPerFill":100,"fillInterval":"1s"}}`,
			global: &bucketWant{4, 4, time.Second},
		},
		{
			name:       "conditions without a global bucket",
			config:     `{"conditions":[{"match":{},"tokenBucket":{"maxTokens":1,"fillInterval":"1s"}}]}`,
			conditions: []bucketWant{{1, 1, time.Second}},
			matchers:   []int{0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, _ := newTestFilter(t, tt.config)
			check := func(what string, b *bucket, want bucketWant) {
				t.Helper()
				if b.max != want.max || b.fill != want.fill || b.interval != want.interval {
					t.Errorf("%s: max %d fill %d every %v, want max %d fill %d every %v", what, b.max, b.fill,
						b.interval, want.max, want.fill, want.interval)
				}
			}
			switch {
			case tt.global == nil && l.global != nil:
				t.Errorf("global bucket %+v, want none", l.global)
			case tt.global != nil && l.global == nil:
				t.Error("no global bucket")
			case tt.global != nil:
				check("global bucket", l.global, *tt.global)
			}
			if len(l.conditions) != len(tt.conditions) {
				t.Fatalf("%d conditions, want %d", len(l.conditions), len(tt.conditions))
			}
			for i, want := range tt.conditions {
				check("condition", l.conditions[i].bucket, want)
				if got := len(l.conditions[i].match); got != tt.matchers[i] {
					t.Errorf("condition %d: %d matchers, want %d", i, got, tt.matchers[i])
				}
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	const ok = `{"maxTokens":1,"fillInterval":"1s"}`
	tests := []struct {
		name, config string
		want         []string // each must appear in the error
	}{
		{"not JSON", `{`, []string{"unexpected"}},
		{"unknown field", `{"tokenBucket":` + ok + `,"burst":3}`, []string{`unknown field "burst"`}},
		{"unknown nested field", `{"tokenBucket":{"maxTokens":1,"fillInterval":"1s","refill":2}}`,
			[]string{`unknown field "refill"`}},
		{"no tokens", `{"tokenBucket":{"maxTokens":0,"fillInterval":"1s"}}`,
			[]string{"tokenBucket.maxTokens: must be positive"}},
		{"no interval", `{"tokenBucket":{"maxTokens":1}}`, []string{"tokenBucket.fillInterval: required"}},
		{"zero interval", `{"tokenBucket":{"maxTokens":1,"fillInterval":"0s"}}`,
			[]string{"tokenBucket.fillInterval: must be positive"}},
		{"negative interval", `{"tokenBucket":{"maxTokens":1,"fillInterval":"-1s"}}`,
			[]string{"tokenBucket.fillInterval: must be positive"}},
		{"zero fill", `{"tokenBucket":{"maxTokens":1,"tokensPerFill":0,"fillInterval":"1s"}}`,
			[]string{"tokenBucket.tokensPerFill: must be positive"}},
		{"faster than a token a nanosecond", `{"tokenBucket":{"maxTokens":5,"tokensPerFill":5,"fillInterval":"0.000000004s"}}`,
			[]string{"tokenBucket.tokensPerFill: 5 tokens every 4ns is more than one a nanosecond"}},
		{"second condition's interval", `{"conditions":[{"tokenBucket":` + ok + `},
			{"tokenBucket":{"maxTokens":1,"fillInterval":"0s"}}]}`,
			[]string{"conditions[1].tokenBucket.fillInterval: must be positive"}},
		{"condition without bucket", `{"conditions":[{"match":{}}]}`,
			[]string{"conditions[0].tokenBucket: required"}},
		{"matcher without name", `{"conditions":[{"match":{"metadata":[{"exactMatch":"a"}]},"tokenBucket":` + ok + `}]}`,
			[]string{"conditions[0].match.metadata[0].name: required"}},
		{"bad regex", `{"conditions":[{"match":{"metadata":[{"name":"m"},{"name":"m","stringMatch":{"safeRegex":{"regex":"("}}}]},"tokenBucket":` + ok + `}]}`,
			[]string{"conditions[0].match.metadata[1].stringMatch.safeRegex.regex: bad regex"}},
		{"bad deprecated regex", `{"conditions":[{"match":{"metadata":[{"name":"m","safeRegexMatch":{"regex":"a**"}}]},"tokenBucket":` + ok + `}]}`,
			[]string{"conditions[0].match.metadata[0].safeRegexMatch.regex: bad regex"}},
		{"empty string matcher", `{"conditions":[{"match":{"metadata":[{"name":"m","stringMatch":{}}]},"tokenBucket":` + ok + `}]}`,
			[]string{"conditions[0].match.metadata[0].stringMatch: one of"}},
		{"custom matcher", `{"conditions":[{"match":{"metadata":[{"name":"m","stringMatch":{"custom":{"name":"x"}}}]},"tokenBucket":` + ok + `}]}`,
			[]string{"conditions[0].match.metadata[0].stringMatch.custom: not supported"}},
		{"every fault at once", `{"tokenBucket":{"fillInterval":"1s"},"conditions":[{"tokenBucket":{"maxTokens":2}}]}`,
			[]string{"tokenBucket.maxTokens: must be positive", "conditions[0].tokenBucket.fillInterval: required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Registration().New([]byte(tt.config))
			if err == nil {
				t.Fatalf("config %s accepted", tt.config)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestBucket(t *testing.T) {
	type step struct {
		at    time.Duration
		tries int
		want  int // tokens granted
	}
	tests := []struct {
		name         string
		max, perFill int64
		interval     time.Duration
		steps        []step
	}{
		{"starts full, burst up to max", 3, 1, time.Second, []step{{0, 5, 3}}},
		{"nothing back within the first interval", 3, 1, time.Second, []step{{0, 3, 3}, {999 * time.Millisecond, 1, 0}}},
		{"one fill per whole interval", 3, 1, time.Second, []step{
			{0, 3, 3}, {time.Second, 2, 1}, {2500 * time.Millisecond, 2, 1}, {2999 * time.Millisecond, 1, 0},
			{3 * time.Second, 2, 1}}},
		{"fills add up over intervals", 5, 1, time.Second, []step{{0, 5, 5}, {3 * time.Second, 5, 3}}},
		{"partial intervals do not carry over tokens, but their time counts", 5, 1, time.Second, []step{
			{0, 5, 5}, {1500 * time.Millisecond, 5, 1}, {2 * time.Second, 5, 1}}},
		{"several tokens per fill", 10, 4, time.Second, []step{
			{0, 10, 10}, {time.Second, 5, 4}, {3 * time.Second, 10, 8}}},
		{"capped at max", 3, 2, time.Second, []step{{0, 3, 3}, {10 * time.Second, 5, 3}}},
		{"a fill tops up a partly used bucket only to max", 5, 2, time.Second, []step{
			{0, 1, 1}, {time.Second, 10, 5}}},
		{"tokens left over stay", 5, 1, time.Second, []step{
			{0, 2, 2}, {time.Second, 2, 2}, {2 * time.Second, 10, 3}}},
		{"after a long idle, a full bucket and no more", 2, 1, time.Millisecond, []step{
			{0, 2, 2}, {24 * 365 * time.Hour, 5, 2}, {24*365*time.Hour + time.Millisecond, 5, 1}}},
		{"one token a nanosecond", 1, 1, time.Nanosecond, []step{{0, 3, 1}, {1, 3, 1}, {10, 3, 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFullBucket(tt.max, min(tt.perFill, tt.max), tt.interval)
			for i, s := range tt.steps {
				got := 0
				for range s.tries {
					if b.take(s.at) {
						got++
					}
				}
				if got != s.want {
					t.Fatalf("step %d at %v: %d of %d takes granted, want %d", i, s.at, got, s.tries, s.want)
				}
			}
		})
	}
}

func TestConditionOrder(t *testing.T) {
	// Each bucket has its own size, so the number of requests that pass shows which one was used.
	const withGlobal = `{"tokenBucket":{"maxTokens":3,"fillInterval":"3600s"},"conditions":[
		{"match":{"metadata":[{"name":"method","stringMatch":{"exact":"sayHello"}}]},
		 "tokenBucket":{"maxTokens":1,"fillInterval":"3600s"}},
		{"match":{"metadata":[{"name":"interface","stringMatch":{"prefix":"org."}},{"name":"env","presentMatch":true}]},
		 "tokenBucket":{"maxTokens":2,"fillInterval":"3600s"}}]}`
	const conditionsOnly = `{"conditions":[
		{"match":{"metadata":[{"name":"method","stringMatch":{"exact":"sayHello"}}]},
		 "tokenBucket":{"maxTokens":1,"fillInterval":"3600s"}}]}`
	const catchAll = `{"tokenBucket":{"maxTokens":3,"fillInterval":"3600s"},"conditions":[
		{"tokenBucket":{"maxTokens":2,"fillInterval":"3600s"}}]}`
	tests := []struct {
		name, config string
		kv           []string
		want         int // requests that pass out of 10
	}{
		{"first condition", withGlobal, []string{"method", "sayHello"}, 1},
		{"first of two matching conditions", withGlobal, []string{"method", "sayHello", "interface", "org.a", "env", "x"}, 1},
		{"second condition", withGlobal, []string{"method", "bye", "interface", "org.a", "env", "x"}, 2},
		{"all matchers of a condition must hold", withGlobal, []string{"method", "bye", "interface", "org.a"}, 3},
		{"global bucket", withGlobal, []string{"method", "bye"}, 3},
		{"no metadata", withGlobal, nil, 3},
		{"condition without global", conditionsOnly, []string{"method", "sayHello"}, 1},
		{"no bucket: unlimited", conditionsOnly, []string{"method", "bye"}, 10},
		{"empty config: unlimited", ``, []string{"method", "bye"}, 10},
		{"a condition without match selects everything", catchAll, nil, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, _ := newTestFilter(t, tt.config)
			ex := request(tt.kv...)
			got := 0
			for range 10 {
				if allowed(t, l, ex) {
					got++
				}
			}
			if got != tt.want {
				t.Errorf("%d of 10 passed, want %d", got, tt.want)
			}
		})
	}
}

func TestBucketsAreIndependent(t *testing.T) {
	l, clock := newTestFilter(t, `{"tokenBucket":{"maxTokens":1,"fillInterval":"1s"},"conditions":[
		{"match":{"metadata":[{"name":"method","exactMatch":"a"}]},"tokenBucket":{"maxTokens":1,"fillInterval":"2s"}}]}`)
	a, other := request("method", "a"), request("method", "b")
	steps := []struct {
		at   time.Duration
		ex   *exchange
		name string
		want bool
	}{
		{0, a, "a", true},
		{0, a, "a", false},
		{0, other, "b", true}, // the global bucket is still full
		{0, other, "b", false},
		{time.Second, other, "b", true},
		{time.Second, a, "a", false}, // a's bucket fills every 2s
		{2 * time.Second, a, "a", true},
	}
	for i, s := range steps {
		clock.set(s.at)
		if got := allowed(t, l, s.ex); got != s.want {
			t.Errorf("step %d: request %s at %v passed = %v, want %v", i, s.name, s.at, got, s.want)
		}
	}
}

func TestConcurrentTakes(t *testing.T) {
	const goroutines, perGoroutine = 8, 400
	t.Run("fixed time: exactly max", func(t *testing.T) {
		l, clock := newTestFilter(t, `{"tokenBucket":{"maxTokens":1000,"tokensPerFill":1000,"fillInterval":"1s"}}`)
		clock.set(5*time.Second + time.Millisecond)
		var granted atomic.Int64
		run(goroutines, func() {
			ex := request("method", "m")
			for range perGoroutine {
				if l.OnRequest(ex) == filter.Continue {
					granted.Add(1)
				}
			}
		})
		if got := granted.Load(); got != 1000 {
			t.Errorf("%d granted of %d tries, want 1000", got, goroutines*perGoroutine)
		}
	})
	t.Run("moving time: never above max plus the fills", func(t *testing.T) {
		const maxTokens, perFill, fills = 50, 10, 20
		b := newFullBucket(maxTokens, perFill, time.Millisecond)
		clock := &fakeClock{}
		var granted atomic.Int64
		var wg sync.WaitGroup
		for range goroutines {
			wg.Go(func() {
				for range perGoroutine {
					if b.take(clock.now()) {
						granted.Add(1)
					}
				}
			})
		}
		wg.Go(func() {
			for range fills {
				clock.advance(time.Millisecond)
			}
		})
		wg.Wait()
		if got, limit := granted.Load(), int64(maxTokens+perFill*fills); got > limit {
			t.Errorf("%d granted, more than the %d the bucket held and gained", got, limit)
		}
		// Whatever the interleaving, a bucket left alone refills to max and no further.
		clock.advance(time.Hour)
		got := 0
		for range 2 * maxTokens {
			if b.take(clock.now()) {
				got++
			}
		}
		if got != maxTokens {
			t.Errorf("after an hour, %d granted, want %d", got, maxTokens)
		}
	})
}

// run calls f from n goroutines at once and waits for them.
func run(n int, f func()) {
	var start, done sync.WaitGroup
	start.Add(1)
	for range n {
		done.Go(func() {
			start.Wait()
			f()
		})
	}
	start.Done()
	done.Wait()
}

// loader is a codec.Loader that adds an attachment on first use, as the Dubbo codec does.
type loader struct{ calls int }

func (l *loader) LoadMetadata(msg *codec.Message) error {
	l.calls++
	msg.Metadata.Add("env", "canary")
	return nil
}

func TestMatcherLoadsDeferredMetadata(t *testing.T) {
	l, _ := newTestFilter(t, `{"conditions":[{"match":{"metadata":[{"name":"env","exactMatch":"canary"}]},
		"tokenBucket":{"maxTokens":1,"fillInterval":"3600s"}}]}`)
	ex := request("method", "m")
	ld := &loader{}
	ex.msg.Metadata.Defer(ld, &ex.msg)
	if !allowed(t, l, ex) || allowed(t, l, ex) {
		t.Error("the condition on a deferred key did not select its bucket")
	}
	if ld.calls != 1 {
		t.Errorf("loader ran %d times, want 1", ld.calls)
	}
}
