// Package deploy renders the Helm chart under deploy/helm/meltemi with Helm's own Go library, checks what it
// renders, writes the plain manifests (deploy/manifests/meltemi.yaml) from it, and applies every object to a
// real kube-apiserver and etcd (envtest) when KUBEBUILDER_ASSETS names their binaries. It is a module of its
// own, so that Helm stays out of the product's go.mod.
package deploy
