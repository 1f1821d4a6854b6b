package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	metaprotocol "github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
)

// DubboAuthorizationPolicy allows or denies Dubbo calls by the caller's identity and the interface
// and method called. It applies to the services of its namespace, or of every namespace when it
// lives in the mesh's root namespace. DENY policies are evaluated first; with ALLOW policies, a
// call none of them matches is denied.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:path=dubboauthorizationpolicies,categories={aeraki-io,dubbo-aeraki-io},shortName=dap
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Action",type=string,JSONPath=".spec.action"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=".metadata.creationTimestamp"
type DubboAuthorizationPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the policy.
	Spec DubboAuthorizationPolicySpec `json:"spec"`
	// Status is what the controller reports about this object.
	// +optional
	Status metaprotocol.Status `json:"status,omitzero"`
}

// Action is what a policy does to the calls its rules match.
// +kubebuilder:validation:Enum=ALLOW;DENY
type Action string

// Actions, with Aeraki's enum numbers in comments.
const (
	ActionAllow Action = "ALLOW" // 0, the default
	ActionDeny  Action = "DENY"  // 1
)

// DubboAuthorizationPolicySpec is the policy of a DubboAuthorizationPolicy.
type DubboAuthorizationPolicySpec struct {
	// Rules match calls; a call matches the policy when it matches at least one rule. With no rules,
	// an ALLOW policy matches nothing (so it denies everything) and a DENY policy denies nothing.
	// +optional
	Rules []Rule `json:"rules,omitempty"`
	// Action is ALLOW (the default) or DENY.
	// +optional
	Action Action `json:"action,omitempty"`
}

// Rule matches a call that comes from one of its sources and performs one of its operations; an
// absent list matches anything.
//
// Every string of a rule matches exactly ("abc"), by prefix ("abc*"), by suffix ("*abc"), or any
// non-empty value ("*").
type Rule struct {
	// From lists the sources; a call from any of them matches.
	// +optional
	From []RuleFrom `json:"from,omitempty"`
	// To lists the operations; a call performing any of them matches.
	// +optional
	To []RuleTo `json:"to,omitempty"`
}

// RuleFrom holds one source.
type RuleFrom struct {
	// Source is the caller's identity.
	// +optional
	Source *Source `json:"source,omitempty"`
}

// RuleTo holds one operation.
type RuleTo struct {
	// Operation is what is called.
	// +optional
	Operation *Operation `json:"operation,omitempty"`
}

// Source matches the caller's identity; all of its lists that are set must match.
type Source struct {
	// Principals are callers' SPIFFE identities without the scheme
	// (cluster.local/ns/NAMESPACE/sa/ACCOUNT); they need mTLS.
	// +optional
	Principals []string `json:"principals,omitempty"`
	// NotPrincipals are identities that do not match.
	// +optional
	NotPrincipals []string `json:"notPrincipals,omitempty"`
	// Namespaces are callers' namespaces; they need mTLS.
	// +optional
	Namespaces []string `json:"namespaces,omitempty"`
	// NotNamespaces are namespaces that do not match.
	// +optional
	NotNamespaces []string `json:"notNamespaces,omitempty"`
}

// Operation matches what is called; all of its lists that are set must match.
type Operation struct {
	// Interfaces are Dubbo interfaces, e.g. org.apache.dubbo.samples.basic.api.DemoService.
	// +optional
	Interfaces []string `json:"interfaces,omitempty"`
	// NotInterfaces are interfaces that do not match.
	// +optional
	NotInterfaces []string `json:"notInterfaces,omitempty"`
	// Methods are method names, e.g. sayHello.
	// +optional
	Methods []string `json:"methods,omitempty"`
	// NotMethods are methods that do not match.
	// +optional
	NotMethods []string `json:"notMethods,omitempty"`
}

// DubboAuthorizationPolicyList is a list of DubboAuthorizationPolicies.
//
// +kubebuilder:object:root=true
type DubboAuthorizationPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the listed objects.
	Items []DubboAuthorizationPolicy `json:"items"`
}
