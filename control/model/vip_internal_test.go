package model

import (
	"fmt"
	"net/netip"
	"testing"
)

// collidingHosts finds two host names whose first choice is the same slot. The search is
// deterministic, so every run tests the same pair.
func collidingHosts(t *testing.T) (string, string) {
	t.Helper()
	first := map[netip.Addr]string{}
	for i := range 100000 {
		h := fmt.Sprintf("host-%d.example", i)
		a := vipSlot(h, 0)
		if other, ok := first[a]; ok {
			return other, h
		}
		first[a] = h
	}
	t.Fatal("no colliding hosts found")
	return "", ""
}

func TestAllocateVIPs(t *testing.T) {
	x, y := collidingHosts(t)
	if y < x {
		x, y = y, x
	}
	tests := []struct {
		name  string
		hosts []string
		taken []netip.Addr
		want  map[string]netip.Addr
	}{
		{"first choice", []string{"a.example"}, nil,
			map[string]netip.Addr{"a.example": vipSlot("a.example", 0)}},
		{"taken first choice: next hashed slot", []string{"a.example"}, []netip.Addr{vipSlot("a.example", 0)},
			map[string]netip.Addr{"a.example": vipSlot("a.example", 1)}},
		{"collision: the host that sorts first keeps its slot", []string{y, x}, nil,
			map[string]netip.Addr{x: vipSlot(x, 0), y: vipSlot(y, 1)}},
		{"alone, the other host has its first choice", []string{y}, nil,
			map[string]netip.Addr{y: vipSlot(y, 0)}},
		{"duplicates are one host", []string{"a.example", "a.example"}, nil,
			map[string]netip.Addr{"a.example": vipSlot("a.example", 0)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			taken := map[netip.Addr]bool{}
			for _, a := range tt.taken {
				taken[a] = true
			}
			got, full := allocateVIPs(tt.hosts, taken)
			if len(full) > 0 {
				t.Fatalf("full: %v", full)
			}
			if len(got) != len(tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			for h, a := range tt.want {
				if got[h] != a {
					t.Errorf("%s: got %s, want %s", h, got[h], a)
				}
			}
		})
	}
}

func TestAllocateVIPsNearlyFull(t *testing.T) {
	taken := map[netip.Addr]bool{}
	for i := range uint64(vipSlots) {
		taken[vipAddr(i)] = true
	}
	free := vipAddr(12345)
	delete(taken, free)
	got, full := allocateVIPs([]string{"a.example", "b.example"}, taken)
	if got["a.example"] != free {
		t.Errorf("a.example got %s, want the one free address %s", got["a.example"], free)
	}
	if len(full) != 1 || full[0] != "b.example" {
		t.Errorf("full = %v, want [b.example]", full)
	}
}

func TestVIPAddressesStayInRange(t *testing.T) {
	for _, i := range []uint64{0, 1, vipSlots - 1} {
		a := vipAddr(i)
		if !VIPRange.Contains(a) || a == VIPRange.Addr() || a == netip.MustParseAddr("127.240.255.255") {
			t.Errorf("index %d gives %s", i, a)
		}
	}
}
