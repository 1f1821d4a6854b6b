// Package ratelimitinterop checks the global rate limit against the real Envoy rate limit service
// (github.com/envoyproxy/ratelimit) backed by a real redis-server, through `meltemi mesh` processes serving
// real Apache Thrift clients and servers. It is a module of its own, so that the Thrift library stays out of
// the product's go.mod.
//
// The servers are found through MELTEMI_RATELIMIT_SERVER and MELTEMI_REDIS_SERVER, which `make test` sets
// after hack/test-peers.sh has installed them.
package ratelimitinterop
