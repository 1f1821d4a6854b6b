package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// ApplicationProtocol declares a protocol carried by MetaProtocol and the codec that speaks it.
// dubbo and thrift need none: their codecs are known by name.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories={aeraki-io,metaprotocol-aeraki-io}
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Protocol",type=string,JSONPath=".spec.protocol"
// +kubebuilder:printcolumn:name="Codec",type=string,JSONPath=".spec.codec"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=".metadata.creationTimestamp"
type ApplicationProtocol struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the protocol declaration.
	Spec ApplicationProtocolSpec `json:"spec"`
	// Status is what the controller reports about this object.
	// +optional
	Status Status `json:"status,omitzero"`
}

// ApplicationProtocolSpec names a protocol and its codec.
type ApplicationProtocolSpec struct {
	// Protocol is the name used in port names (tcp-metaprotocol-<protocol>-...), e.g. brpc.
	Protocol string `json:"protocol,omitempty"`
	// Codec is the registered name of the codec, e.g. aeraki.meta_protocol.codec.brpc.
	Codec string `json:"codec,omitempty"`
}

// ApplicationProtocolList is a list of ApplicationProtocols.
//
// +kubebuilder:object:root=true
type ApplicationProtocolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the listed objects.
	Items []ApplicationProtocol `json:"items"`
}
