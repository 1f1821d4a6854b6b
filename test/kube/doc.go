// Package kubeinterop holds the tests that run Meltemi's kube config source, and the controller
// reading a cluster, against a real kube-apiserver and etcd (kubetest). It is a module of its own,
// so that envtest's dependencies stay out of the product's go.mod.
package kubeinterop
