// Package e2e holds Meltemi's end-to-end tests: a proxy built in-process from its public API, between real
// peers of each protocol (dubbo-go consumers and providers, ...) over real sockets.
//
// It is a module of its own so that the heavy test peers stay out of the product's go.mod. Run it with
// `go test ./...` from this directory.
package e2e
