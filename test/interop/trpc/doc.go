// Package trpc holds the interop tests of Meltemi's tRPC codec: real trpc-go v1.0.3 clients and servers,
// unary and streaming, through an in-process proxy and through the meltemi binary. It is a module of its own
// so that trpc-go and its dependencies stay out of the product's go.mod.
package trpc
