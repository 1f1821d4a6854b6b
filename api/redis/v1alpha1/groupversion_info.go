// Package v1alpha1 holds the Go types of Aeraki's redis.aeraki.io/v1alpha1 custom resources,
// RedisService and RedisDestination. JSON field names and enum values are Aeraki's, so the
// manifests and cluster objects written for Aeraki load unchanged.
//
// +kubebuilder:object:generate=true
// +groupName=redis.aeraki.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the API group and version of the types in this package.
var GroupVersion = schema.GroupVersion{Group: "redis.aeraki.io", Version: "v1alpha1"}

// SchemeGroupVersion is GroupVersion under the name Kubernetes' code generators look for.
var SchemeGroupVersion = GroupVersion

// SchemeBuilder registers the types of this package with a runtime.Scheme.
var SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

// AddToScheme adds the types of this package to a runtime.Scheme.
var AddToScheme = SchemeBuilder.AddToScheme

// Resource returns the GroupResource of a resource of this group, e.g. "redisservices".
func Resource(resource string) schema.GroupResource {
	return GroupVersion.WithResource(resource).GroupResource()
}

func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(GroupVersion,
		&RedisService{}, &RedisServiceList{},
		&RedisDestination{}, &RedisDestinationList{},
	)
	metav1.AddToGroupVersion(scheme, GroupVersion)
	return nil
}
