package proxy

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"

	"github.com/meltemi-mesh/meltemi/codec"
)

// Envoy's defaults for the consistent-hash tables and priority failover.
const (
	defaultMinRingSize     = 1024
	defaultMaxRingSize     = 8 << 20
	defaultMaglevTableSize = 65537
	overprovisioning       = 1.4
)

// lbView is a cluster's endpoints as load balancing sees them at one moment: grouped by priority, ejected
// endpoints left out, with the tables the policy needs. A view is immutable; the cluster builds a new one
// when an ejection changes which endpoints are usable.
type lbView struct {
	gen    uint64 // the cluster state's health generation the view was built at
	levels []*lbLevel
	// loads are the cumulative shares of requests, out of 100, that go to each level; nil when one level
	// takes everything.
	loads []uint32
}

// lbLevel is one priority's usable endpoints.
type lbLevel struct {
	endpoints   []*endpointRef
	upTo        []uint32 // cumulative weights, for weighted choices
	totalWeight uint32
	uniform     bool
	rr          atomic.Uint32
	ring        []ringEntry // RING_HASH
	table       []int32     // MAGLEV: endpoint index per slot
}

type ringEntry struct {
	hash uint64
	ep   int32
}

// view returns the cluster's current load-balancing view, rebuilding it when endpoint health changed.
func (c *cluster) view() *lbView {
	v := c.cur.Load()
	if g := c.state.gen.Load(); v.gen != g {
		v = c.rebuildView(g)
	}
	return v
}

func (c *cluster) rebuildView(gen uint64) *lbView {
	c.viewMu.Lock()
	defer c.viewMu.Unlock()
	if v := c.cur.Load(); v.gen == gen {
		return v
	}
	v := c.buildView(gen)
	c.cur.Store(v)
	return v
}

// buildView groups the cluster's endpoints by priority and computes how requests spread over the priorities
// the way Envoy does: a priority's health is its share of usable endpoints times the overprovisioning factor
// (capped at 100%), and each priority takes as much of the load as its health allows, in order, the rest
// spilling over to the next. A priority whose usable share is under the panic threshold balances over all of
// its endpoints.
func (c *cluster) buildView(gen uint64) *lbView {
	v := &lbView{gen: gen}
	var prios []uint32
	for _, e := range c.endpoints {
		if !slices.Contains(prios, e.priority) {
			prios = append(prios, e.priority)
		}
	}
	slices.Sort(prios)
	var health []float64
	for _, p := range prios {
		var all, usable []*endpointRef
		for _, e := range c.endpoints {
			if e.priority != p {
				continue
			}
			all = append(all, e)
			if !e.health.ejected.Load() {
				usable = append(usable, e)
			}
		}
		share := 100 * float64(len(usable)) / float64(len(all))
		health = append(health, min(100, share*overprovisioning))
		if len(usable) == 0 || share < c.panicThreshold {
			if c.panicThreshold > 0 {
				usable = all // panic: better an ejected endpoint than overloading the few left, or none
			}
		}
		v.levels = append(v.levels, c.newLevel(usable))
	}
	if len(v.levels) == 0 {
		v.levels = []*lbLevel{{}}
	}
	if len(v.levels) == 1 {
		return v
	}
	var total float64
	for _, h := range health {
		total += h
	}
	total = min(100, total)
	if total == 0 {
		v.loads = nil // nothing usable anywhere: everything to the first priority
		v.levels = v.levels[:1]
		return v
	}
	left := uint32(100)
	v.loads = make([]uint32, len(v.levels))
	var cum uint32
	for i, h := range health {
		l := min(left, uint32(h*100/total))
		left -= l
		cum += l
		v.loads[i] = cum
	}
	if left > 0 { // rounding: the first priority that has endpoints takes the remainder
		for i := range v.loads {
			if len(v.levels[i].endpoints) > 0 {
				for j := i; j < len(v.loads); j++ {
					v.loads[j] += left
				}
				break
			}
		}
	}
	if v.loads[0] >= 100 {
		v.levels, v.loads = v.levels[:1], nil
	}
	return v
}

func (c *cluster) newLevel(eps []*endpointRef) *lbLevel {
	l := &lbLevel{endpoints: eps, uniform: true}
	for i, e := range eps {
		if i > 0 && e.weight != eps[0].weight {
			l.uniform = false
		}
		l.totalWeight += e.weight
		l.upTo = append(l.upTo, l.totalWeight)
	}
	if len(eps) == 0 {
		return l
	}
	switch c.lb {
	case RingHash:
		l.ring = buildRing(eps, cmp.Or(c.minRingSize, defaultMinRingSize), cmp.Or(c.maxRingSize, defaultMaxRingSize))
	case Maglev:
		l.table = buildMaglev(eps, cmp.Or(c.maglevTableSize, defaultMaglevTableSize))
	}
	return l
}

// pick chooses an endpoint for a request, or nil if the cluster has none. hash is the request's hash for
// the consistent-hash policies, valid when hashed is true.
func (c *cluster) pick(hash uint64, hashed bool) *endpointRef {
	v := c.view()
	l := v.levels[0]
	if v.loads != nil {
		var n uint32
		if hashed {
			n = uint32(hash % 100)
		} else {
			n = rand.Uint32N(100)
		}
		for i, upTo := range v.loads {
			if n < upTo {
				l = v.levels[i]
				break
			}
		}
	}
	return l.pick(c.lb, hash, hashed)
}

// pickOther is pick avoiding one endpoint (a retry's previous one) when the cluster has another: a few
// tries, as Envoy's previous-hosts retry predicate makes.
func (c *cluster) pickOther(not *endpointRef, hash uint64, hashed bool) *endpointRef {
	ep := c.pick(hash, hashed)
	for range 4 {
		if ep != not || ep == nil {
			return ep
		}
		// A hash always lands on the same endpoint: spread the retry as if unhashed.
		ep = c.pick(0, false)
	}
	return ep
}

func (l *lbLevel) pick(policy LBPolicy, hash uint64, hashed bool) *endpointRef {
	n := len(l.endpoints)
	switch {
	case n == 0:
		return nil
	case n == 1:
		return l.endpoints[0]
	}
	switch policy {
	case Random:
		return l.weightedRandom()
	case LeastRequest:
		// Power of two choices, as Envoy does: two random endpoints, the one with fewer requests in flight.
		a, b := l.weightedRandom(), l.weightedRandom()
		if load(b) < load(a) {
			return b
		}
		return a
	case RingHash:
		if !hashed {
			return l.weightedRandom()
		}
		i, _ := slices.BinarySearchFunc(l.ring, hash, func(e ringEntry, h uint64) int { return cmp.Compare(e.hash, h) })
		if i == len(l.ring) {
			i = 0
		}
		return l.endpoints[l.ring[i].ep]
	case Maglev:
		if !hashed {
			return l.weightedRandom()
		}
		return l.endpoints[l.table[hash%uint64(len(l.table))]]
	default:
		if !l.uniform {
			return l.weightedRandom()
		}
		return l.endpoints[int(l.rr.Add(1)-1)%n]
	}
}

func load(e *endpointRef) int64 {
	if h := e.host.Load(); h != nil {
		return h.active.Load()
	}
	return 0
}

func (l *lbLevel) weightedRandom() *endpointRef {
	if l.uniform {
		return l.endpoints[rand.IntN(len(l.endpoints))]
	}
	n := rand.Uint32N(l.totalWeight)
	i, _ := slices.BinarySearch(l.upTo, n+1)
	return l.endpoints[min(i, len(l.endpoints)-1)]
}

// requestHash hashes the request's values of the route's hash keys, combined as Envoy combines hash
// policies; hashed is false when the request has none of them.
func requestHash(md *codec.Metadata, keys []string) (hash uint64, hashed bool) {
	for _, k := range keys {
		v, ok := md.Get(k)
		if !ok {
			continue
		}
		h := xxhash.Sum64String(v)
		if hashed {
			hash = (hash<<1 | hash>>63) ^ h
		} else {
			hash, hashed = h, true
		}
	}
	return hash, hashed
}

// buildRing builds a ketama-style ring as Envoy's ring hash does: each endpoint gets entries in proportion
// to its weight, hashed from "address_n" with xxHash64, the ring scaled so the lightest endpoint has at
// least its share of minSize entries, and no more than maxSize entries in all.
func buildRing(eps []*endpointRef, minSize, maxSize uint64) []ringEntry {
	var total float64
	for _, e := range eps {
		total += float64(e.weight)
	}
	minWeight := math.Inf(1)
	for _, e := range eps {
		minWeight = min(minWeight, float64(e.weight)/total)
	}
	scale := min(math.Ceil(minWeight*float64(minSize))/minWeight, float64(maxSize))
	ring := make([]ringEntry, 0, int(math.Ceil(scale)))
	var have, want float64
	for i, e := range eps {
		want += scale * float64(e.weight) / total
		key := make([]byte, 0, len(e.address)+8)
		for n := 0; have < want; n++ {
			key = strconv.AppendInt(append(append(key[:0], e.address...), '_'), int64(n), 10)
			ring = append(ring, ringEntry{hash: xxhash.Sum64(key), ep: int32(i)})
			have++
		}
	}
	slices.SortFunc(ring, func(a, b ringEntry) int { return cmp.Compare(a.hash, b.hash) })
	return ring
}

// buildMaglev fills a Maglev lookup table (Eisenbud et al., 2016) of the given prime size: each endpoint
// walks its own permutation of the slots (offset and skip from xxHash64 of its address, seeds 0 and 1, as
// Envoy computes them) and takes the next free slot on its turn; an endpoint of half the largest weight gets
// a turn every other round, so slots follow weights.
func buildMaglev(eps []*endpointRef, size uint64) []int32 {
	type entry struct {
		offset, skip, next uint64
		weight, target     float64
	}
	entries := make([]entry, len(eps))
	var maxWeight float64
	for i, e := range eps {
		seeded := xxhash.NewWithSeed(1)
		seeded.WriteString(e.address)
		entries[i] = entry{
			offset: xxhash.Sum64String(e.address) % size,
			skip:   seeded.Sum64()%(size-1) + 1,
			weight: float64(e.weight),
		}
		maxWeight = max(maxWeight, float64(e.weight))
	}
	table := make([]int32, size)
	for i := range table {
		table[i] = -1
	}
	filled := uint64(0)
	for round := 1.0; filled < size; round++ {
		for i := range entries {
			if filled == size {
				break
			}
			en := &entries[i]
			if round*en.weight < en.target {
				continue
			}
			en.target += maxWeight
			slot := (en.offset + en.skip*en.next) % size
			for table[slot] >= 0 {
				en.next++
				slot = (en.offset + en.skip*en.next) % size
			}
			table[slot] = int32(i)
			en.next++
			filled++
		}
	}
	return table
}
