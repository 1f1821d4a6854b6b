// Package localratelimit is Aeraki's local rate limit filter: token buckets kept in the proxy, one for the
// requests each condition selects and one for the rest, answering requests over the limit itself.
package localratelimit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"

	lrlv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/filters/local_ratelimit/v1alpha"
	"github.com/meltemi-mesh/meltemi/proxy/filter"
	"github.com/meltemi-mesh/meltemi/proxy/filter/headermatch"
)

// Name is the filter's name in a MetaProtocolProxy's meta_protocol_filters, as Aeraki writes it.
const Name = "aeraki.meta_protocol.filters.local_ratelimit"

// Registration describes the filter to the proxy's filter registry.
func Registration() filter.Registration {
	return filter.Registration{Name: Name, New: newFilter}
}

func newFilter(config json.RawMessage) (filter.Filter, error) {
	cfg, err := decode(config)
	if err != nil {
		return nil, err
	}
	return build(cfg, monotonic())
}

// decode reads the protobuf JSON of a LocalRateLimit. protojson rejects unknown fields by default, which is
// what the filter contract asks. An empty config is a LocalRateLimit with nothing set: every request passes.
func decode(config json.RawMessage) (*lrlv1alpha.LocalRateLimit, error) {
	cfg := &lrlv1alpha.LocalRateLimit{}
	if len(bytes.TrimSpace(config)) == 0 {
		return cfg, nil
	}
	if err := protojson.Unmarshal(config, cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// monotonic returns a clock that reads the time elapsed since it was made. time.Since uses the monotonic
// reading, so wall-clock steps neither refill nor drain the buckets.
func monotonic() func() time.Duration {
	start := time.Now()
	return func() time.Duration { return time.Since(start) }
}

// build compiles a decoded config. Errors name every field at fault, in the config's own JSON names, since
// that is what reaches the proxy and what a user can search the dumped config for.
func build(cfg *lrlv1alpha.LocalRateLimit, now func() time.Duration) (*limiter, error) {
	l := &limiter{now: now}
	var errs []error
	if tb := cfg.GetTokenBucket(); tb != nil {
		b, err := newBucket(tb, "tokenBucket")
		errs = append(errs, err)
		l.global = b
	}
	for i, c := range cfg.GetConditions() {
		path := fmt.Sprintf("conditions[%d]", i)
		cond := condition{}
		match, err := headermatch.CompileAll(c.GetMatch().GetMetadata())
		if err != nil {
			errs = append(errs, prefixed(path+".match.", err))
		}
		cond.match = match
		if c.GetTokenBucket() == nil {
			// Aeraki would build an empty bucket that refuses everything the condition selects; a condition
			// without a bucket is far more likely a mistake than a way to write "deny".
			errs = append(errs, fmt.Errorf("%s.tokenBucket: required", path))
		} else {
			b, err := newBucket(c.GetTokenBucket(), path+".tokenBucket")
			errs = append(errs, err)
			cond.bucket = b
		}
		l.conditions = append(l.conditions, cond)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return l, nil
}

// newBucket checks an Envoy TokenBucket against Envoy's own rules (max_tokens and fill_interval positive,
// tokens_per_fill positive when set, 1 when not) and returns it full, as Envoy starts it.
func newBucket(tb *typev3.TokenBucket, path string) (*bucket, error) {
	var errs []error
	if tb.GetMaxTokens() == 0 {
		errs = append(errs, fmt.Errorf("%s.maxTokens: must be positive", path))
	}
	perFill := int64(1)
	if w := tb.GetTokensPerFill(); w != nil {
		if w.GetValue() == 0 {
			errs = append(errs, fmt.Errorf("%s.tokensPerFill: must be positive", path))
		}
		perFill = int64(w.GetValue())
	}
	var interval time.Duration
	switch d := tb.GetFillInterval(); {
	case d == nil:
		errs = append(errs, fmt.Errorf("%s.fillInterval: required", path))
	case d.CheckValid() != nil:
		errs = append(errs, fmt.Errorf("%s.fillInterval: %w", path, d.CheckValid()))
	case d.AsDuration() <= 0:
		errs = append(errs, fmt.Errorf("%s.fillInterval: must be positive", path))
	default:
		interval = d.AsDuration()
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	maxTokens := int64(tb.GetMaxTokens())
	// A fill never lifts the bucket above max_tokens, so filling more than that is filling exactly that;
	// taking the smaller keeps the bucket's arithmetic small (see bucket).
	fill := min(perFill, maxTokens)
	if fill > interval.Nanoseconds() {
		return nil, fmt.Errorf("%s.tokensPerFill: %d tokens every %v is more than one a nanosecond; "+
			"lengthen fillInterval", path, fill, interval)
	}
	return newFullBucket(maxTokens, fill, interval), nil
}

// prefixed puts prefix before each of the errors err joins, so that every one names its field in full.
func prefixed(prefix string, err error) error {
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			errs = append(errs, fmt.Errorf("%s%w", prefix, e))
		}
		return errors.Join(errs...)
	}
	return fmt.Errorf("%s%w", prefix, err)
}
