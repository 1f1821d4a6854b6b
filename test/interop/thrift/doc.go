// Package thriftinterop checks Meltemi's Thrift codec against real Thrift peers: Apache Thrift Go clients and
// servers over binary+framed, compact+framed, binary+buffered (unframed) and THeader, and CloudWeGo Kitex
// clients and servers over TTHeader and framed, each pair talking through the proxy over loopback sockets. The
// stubs the peers use are generated from idl/echo.thrift by gen.sh and committed.
package thriftinterop
