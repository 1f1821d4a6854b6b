// Package trpcgo checks the tRPC codec against tRPC-Go v1.0.3, the reference implementation, in a module of its
// own so that the product's go.mod does not carry tRPC-Go's dependencies.
package trpcgo
