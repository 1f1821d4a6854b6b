package routev1alpha1_test

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	routev1alpha1 "github.com/meltemi-mesh/meltemi/api/meltemi/route/v1alpha1"
)

// TestConcurrencyLimitWire pins what other control planes and data planes rely on: the type URL and the
// field numbers and wire types.
func TestConcurrencyLimitWire(t *testing.T) {
	m := &routev1alpha1.ConcurrencyLimit{MaxRequests: 100, PerMetadataKey: "method"}
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	if want := "type.googleapis.com/meltemi.route.v1alpha1.ConcurrencyLimit"; a.GetTypeUrl() != want {
		t.Errorf("type URL %s, want %s", a.GetTypeUrl(), want)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	want := protowire.AppendTag(nil, 1, protowire.VarintType)
	want = protowire.AppendVarint(want, 100)
	want = protowire.AppendTag(want, 2, protowire.BytesType)
	want = protowire.AppendString(want, "method")
	if string(b) != string(want) {
		t.Errorf("encoding % x, want % x", b, want)
	}
}
