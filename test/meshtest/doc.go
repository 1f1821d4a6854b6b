// Package meshtest runs Meltemi the way its users do, for tests that check it against real peers: the meltemi
// binary built from this module and started as a child process on manifests in a folder, or a proxy built
// in-process from the public API, each on loopback addresses of the test's own, observed through the admin
// endpoints.
//
// The e2e and interop test modules share it, so that each protocol's tests hold only what is about that
// protocol.
package meshtest
