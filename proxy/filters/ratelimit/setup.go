// Package ratelimit is Aeraki's global rate limit filter: it asks an Envoy rate limit service
// (envoy.service.ratelimit.v3.RateLimitService, ShouldRateLimit) about each request its match selects, so
// that every proxy of the mesh draws from the same limits, and answers requests over the limit itself.
package ratelimit

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	rlv1alpha "github.com/meltemi-mesh/meltemi/api/meta_protocol_proxy/filters/ratelimit/v1alpha"
	"github.com/meltemi-mesh/meltemi/proxy/filter"
	"github.com/meltemi-mesh/meltemi/proxy/filter/headermatch"
)

// Name is the filter's name in a MetaProtocolProxy's meta_protocol_filters, as Aeraki writes it.
const Name = "aeraki.meta_protocol.filters.ratelimit"

// DefaultTimeout bounds a check when the config sets no timeout: Envoy's default for its rate limit filters.
const DefaultTimeout = 20 * time.Millisecond

// Registration describes the filter to the proxy's filter registry.
func Registration() filter.Registration {
	return filter.Registration{Name: Name, New: newFilter}
}

func newFilter(config json.RawMessage) (filter.Filter, error) {
	cfg, err := decode(config)
	if err != nil {
		return nil, err
	}
	return build(cfg)
}

// decode reads the protobuf JSON of a RateLimit; protojson rejects unknown fields, as the filter contract
// asks.
func decode(config json.RawMessage) (*rlv1alpha.RateLimit, error) {
	cfg := &rlv1alpha.RateLimit{}
	if len(bytes.TrimSpace(config)) == 0 {
		// Unlike a local rate limit, a global one cannot mean anything without a service and a domain.
		return nil, errors.New("config: required (domain, rateLimitService and descriptors)")
	}
	if err := protojson.Unmarshal(config, cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// settings is a checked config.
type settings struct {
	match       headermatch.All
	domain      string
	timeout     time.Duration
	failDeny    bool
	cluster     string
	authority   string
	descriptors []descriptor
}

// descriptor makes one entry of the descriptor sent with each check.
type descriptor struct {
	property string // the metadata key read
	key      string // the entry's key
}

// build checks a decoded config and returns the filter, not yet provisioned. Errors name every field at
// fault in the config's JSON names.
func build(cfg *rlv1alpha.RateLimit) (*limiter, error) {
	s, err := check(cfg)
	if err != nil {
		return nil, err
	}
	return newLimiter(s), nil
}

func check(cfg *rlv1alpha.RateLimit) (settings, error) {
	var errs []error
	s := settings{domain: cfg.GetDomain(), failDeny: cfg.GetFailureModeDeny(), timeout: DefaultTimeout}
	match, err := headermatch.CompileAll(cfg.GetMatch().GetMetadata())
	if err != nil {
		errs = append(errs, prefixed("match.", err))
	}
	s.match = match
	if s.domain == "" {
		errs = append(errs, errors.New("domain: required"))
	}
	if d := cfg.GetTimeout(); d != nil {
		switch {
		case d.CheckValid() != nil:
			errs = append(errs, fmt.Errorf("timeout: %w", d.CheckValid()))
		case d.AsDuration() <= 0:
			errs = append(errs, fmt.Errorf("timeout: %v must be positive", d.AsDuration()))
		default:
			s.timeout = d.AsDuration()
		}
	}
	rls := cfg.GetRateLimitService()
	grpcService := rls.GetGrpcService()
	switch {
	case rls == nil:
		errs = append(errs, errors.New("rateLimitService: required"))
	case grpcService.GetGoogleGrpc() != nil:
		// A Google gRPC target is an address outside the mesh, which the proxy does not dial.
		errs = append(errs, errors.New("rateLimitService.grpcService.googleGrpc: not supported; name the "+
			"service's cluster in envoyGrpc.clusterName"))
	case grpcService.GetEnvoyGrpc().GetClusterName() == "":
		errs = append(errs, errors.New("rateLimitService.grpcService.envoyGrpc.clusterName: required"))
	default:
		s.cluster = grpcService.GetEnvoyGrpc().GetClusterName()
		// Envoy sends the cluster name as :authority unless told otherwise.
		s.authority = cmp.Or(grpcService.GetEnvoyGrpc().GetAuthority(), s.cluster)
	}
	if len(cfg.GetDescriptors()) == 0 {
		errs = append(errs, errors.New("descriptors: at least one is required"))
	}
	for i, d := range cfg.GetDescriptors() {
		if d.GetProperty() == "" {
			errs = append(errs, fmt.Errorf("descriptors[%d].property: required", i))
		}
		if d.GetDescriptorKey() == "" {
			errs = append(errs, fmt.Errorf("descriptors[%d].descriptorKey: required", i))
		}
		s.descriptors = append(s.descriptors, descriptor{property: d.GetProperty(), key: d.GetDescriptorKey()})
	}
	return s, errors.Join(errs...)
}

// prefixed puts prefix before each of the errors err joins, so that every one names its field in full.
func prefixed(prefix string, err error) error {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return fmt.Errorf("%s%w", prefix, err)
	}
	var errs []error
	for _, e := range j.Unwrap() {
		errs = append(errs, fmt.Errorf("%s%w", prefix, e))
	}
	return errors.Join(errs...)
}
