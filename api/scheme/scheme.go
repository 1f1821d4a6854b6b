// Package scheme builds the one runtime.Scheme that Meltemi's Kubernetes clients, caches and tests
// share: client-go's built-in kinds, Istio's networking kinds (v1, v1beta1 and v1alpha3) and the
// kinds of Aeraki's groups that Meltemi defines (metaprotocol.aeraki.io, redis.aeraki.io,
// dubbo.aeraki.io).
package scheme

import (
	istionetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	istionetworkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	istionetworkingv1beta1 "istio.io/client-go/pkg/apis/networking/v1beta1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	dubbov1alpha1 "github.com/meltemi-mesh/meltemi/api/dubbo/v1alpha1"
	metaprotocolv1alpha1 "github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
	redisv1alpha1 "github.com/meltemi-mesh/meltemi/api/redis/v1alpha1"
)

// builder registers every kind Meltemi reads or writes.
var builder = runtime.NewSchemeBuilder(
	clientgoscheme.AddToScheme,
	istionetworkingv1.AddToScheme,
	istionetworkingv1beta1.AddToScheme,
	istionetworkingv1alpha3.AddToScheme,
	metaprotocolv1alpha1.AddToScheme,
	redisv1alpha1.AddToScheme,
	dubbov1alpha1.AddToScheme,
)

// AddToScheme adds every kind Meltemi reads or writes to s.
var AddToScheme = builder.AddToScheme

// New returns a new scheme holding every kind Meltemi reads or writes. Each caller gets its own, so
// that nothing registered by one part of the program changes what another sees.
func New() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := AddToScheme(s); err != nil {
		// Registering fixed, known types fails only on a programming error, such as a kind
		// registered twice under different Go types.
		panic("scheme: " + err.Error())
	}
	return s
}
