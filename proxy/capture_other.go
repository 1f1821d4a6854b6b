//go:build !linux

package proxy

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
)

// markControl: firewall marks are Linux's; elsewhere a mark makes dialling fail rather than go unmarked.
func markControl(uint32) func(network, address string, c syscall.RawConn) error {
	return func(string, string, syscall.RawConn) error {
		return errors.New("socket marks (SO_MARK) are supported on Linux only")
	}
}

// originalDst needs netfilter: capture listeners work on Linux only.
func originalDst(net.Conn) (netip.AddrPort, error) {
	return netip.AddrPort{}, errors.New("original destinations are known on Linux only")
}
