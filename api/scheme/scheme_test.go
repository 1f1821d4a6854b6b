package scheme_test

import (
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/meltemi-mesh/meltemi/api/scheme"
)

func TestNewKnowsEveryKind(t *testing.T) {
	s := scheme.New()
	for _, gvk := range []schema.GroupVersionKind{
		{Version: "v1", Kind: "Service"},
		{Version: "v1", Kind: "Pod"},
		{Group: "discovery.k8s.io", Version: "v1", Kind: "EndpointSlice"},
		{Group: "networking.istio.io", Version: "v1", Kind: "ServiceEntry"},
		{Group: "networking.istio.io", Version: "v1beta1", Kind: "WorkloadEntry"},
		{Group: "networking.istio.io", Version: "v1alpha3", Kind: "DestinationRule"},
		{Group: "metaprotocol.aeraki.io", Version: "v1alpha1", Kind: "MetaRouter"},
		{Group: "metaprotocol.aeraki.io", Version: "v1alpha1", Kind: "ApplicationProtocol"},
		{Group: "redis.aeraki.io", Version: "v1alpha1", Kind: "RedisService"},
		{Group: "redis.aeraki.io", Version: "v1alpha1", Kind: "RedisDestination"},
		{Group: "dubbo.aeraki.io", Version: "v1alpha1", Kind: "DubboAuthorizationPolicy"},
		{Group: "dubbo.aeraki.io", Version: "v1alpha1", Kind: "DubboAuthorizationPolicyList"},
	} {
		if !s.Recognizes(gvk) {
			t.Errorf("scheme does not know %s", gvk)
		}
	}
	if scheme.New() == s {
		t.Error("New returned the same scheme twice")
	}
}
