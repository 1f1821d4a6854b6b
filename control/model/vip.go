package model

import (
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"slices"
	"strconv"
)

// VIPRange is the block from which local mode gives an address to a service whose ServiceEntry has none.
var VIPRange = netip.MustParsePrefix("127.240.0.0/16")

// vipSlots is the number of usable addresses in VIPRange: all but the first and the last, which look
// like network and broadcast addresses to people reading them, though loopback has neither.
const vipSlots = 1<<16 - 2

// vipProbeRounds bounds the hashed probes per host before falling back to a linear scan, which only
// a nearly full range ever needs.
const vipProbeRounds = 16

// allocateVIPs gives each host an address of VIPRange that is not taken. An address depends only on
// the host's name, not on which other hosts exist, unless hosts collide: every host first tries the
// slot its name hashes to; of hosts that want the same slot, the first in sorted order gets it and
// the others try their next hashed slot, in rounds, so a host that got its first choice keeps it
// when hosts are added, unless a new host wants the very same slot and sorts before it. Hosts that
// find no free address are returned in full.
func allocateVIPs(hosts []string, taken map[netip.Addr]bool) (vips map[string]netip.Addr, full []string) {
	vips = make(map[string]netip.Addr, len(hosts))
	pending := slices.Clone(hosts)
	slices.Sort(pending)
	pending = slices.Compact(pending)
	used := func(a netip.Addr) bool { return taken[a] }
	take := func(host string, a netip.Addr) {
		vips[host] = a
		taken[a] = true
	}
	for round := 0; round < vipProbeRounds && len(pending) > 0; round++ {
		next := pending[:0]
		for _, h := range pending {
			if a := vipSlot(h, round); !used(a) {
				take(h, a)
			} else {
				next = append(next, h)
			}
		}
		pending = next
	}
	for _, h := range pending {
		start := vipIndex(h, 0)
		found := false
		for i := range uint64(vipSlots) {
			if a := vipAddr((start + i) % vipSlots); !used(a) {
				take(h, a)
				found = true
				break
			}
		}
		if !found {
			full = append(full, h)
		}
	}
	return vips, full
}

// vipSlot is the address a host tries in a given round.
func vipSlot(host string, round int) netip.Addr {
	return vipAddr(vipIndex(host, round))
}

func vipIndex(host string, round int) uint64 {
	sum := sha256.Sum256([]byte(host + "\x00" + strconv.Itoa(round)))
	return binary.BigEndian.Uint64(sum[:8]) % vipSlots
}

func vipAddr(index uint64) netip.Addr {
	b := VIPRange.Addr().As4()
	n := index + 1 // skip x.x.0.0
	b[2], b[3] = byte(n>>8), byte(n)
	return netip.AddrFrom4(b)
}
