package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// Status is what Meltemi's controller reports about an object. Aeraki's CRDs declare a free-form
// status, so objects carrying this status stay valid under Aeraki's CRD definitions too.
type Status struct {
	// ObservedGeneration is the metadata.generation the conditions describe.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions are the latest observations of the object's state, e.g. Accepted.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// The condition types Meltemi's controller sets on its objects, and their reasons.
const (
	// ConditionAccepted is True when the object is valid and takes effect; False with
	// ReasonInvalid, ReasonConflicted or ReasonNoHost and the problem's message otherwise.
	ConditionAccepted = "Accepted"
	// ConditionProgrammed is True once the config made with this generation of the object has
	// been sent to every connected proxy and acknowledged; False with a reason otherwise.
	ConditionProgrammed = "Programmed"

	// ReasonAccepted: valid, and in effect (Accepted True).
	ReasonAccepted = "Accepted"
	// ReasonInvalid: an error in the object (Accepted False); for Programmed, this generation is not
	// served (the last good version may be).
	ReasonInvalid = "Invalid"
	// ReasonConflicted: another object claims what this one does and wins.
	ReasonConflicted = "Conflicted"
	// ReasonNoHost: no service of the mesh has the host the object applies to, with a meta-protocol port.
	ReasonNoHost = "NoHost"
	// ReasonProgrammed: every connected proxy runs a config made with this generation (Programmed True).
	ReasonProgrammed = "Programmed"
	// ReasonPending: sent, not yet acknowledged by every connected proxy.
	ReasonPending = "Pending"
	// ReasonNoProxies: no proxy is connected to any replica of the controller.
	ReasonNoProxies = "NoProxies"
)
