package v1alpha1

import (
	"encoding/json"
	"fmt"
	"time"
)

// Duration is a length of time written as protobuf's JSON mapping writes a
// google.protobuf.Duration ("60s", "0.500s"), the form Aeraki's manifests use. Unlike
// metav1.Duration, which writes "1m0s", it re-encodes those manifests in the form they were
// written in, which Aeraki's own decoder requires. It also reads Go's forms ("1m", "250ms").
//
// +kubebuilder:validation:Type=string
type Duration struct {
	time.Duration `json:"-"`
}

// MarshalJSON writes the duration in protobuf's JSON form.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(formatProtoDuration(d.Duration))
}

// UnmarshalJSON reads protobuf's JSON form or Go's; null leaves the duration unchanged.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"60s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	d.Duration = v
	return nil
}

// formatProtoDuration writes whole seconds, with 3, 6 or 9 fractional digits when needed, as
// protobuf's JSON encoders do.
func formatProtoDuration(d time.Duration) string {
	sign := ""
	// Work in uint64 so that the most negative Duration does not overflow when negated.
	n := uint64(d)
	if d < 0 {
		sign = "-"
		n = -n
	}
	secs, nanos := n/1e9, n%1e9
	switch {
	case nanos == 0:
		return fmt.Sprintf("%s%ds", sign, secs)
	case nanos%1e6 == 0:
		return fmt.Sprintf("%s%d.%03ds", sign, secs, nanos/1e6)
	case nanos%1e3 == 0:
		return fmt.Sprintf("%s%d.%06ds", sign, secs, nanos/1e3)
	default:
		return fmt.Sprintf("%s%d.%09ds", sign, secs, nanos)
	}
}
