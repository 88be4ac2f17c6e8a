// Package flow is the flow table shared by every protocol: a fixed number of
// slots (one per TCP connection, UDP flow or ping flow) and a hash index
// from a flow's addresses to its slot.
//
// Theory of operation: a flow is identified by a Key: protocol, and the
// addresses and ports of one of its sides as gopasst sees them (for the
// guest side: the guest's address and port, and the address and port the
// guest talks to). Each protocol keeps its per-flow state in its own array
// indexed by the slot number (Index), so the table itself holds only what
// every flow has: its kind and keys. A flow can be reachable under two keys
// (its guest side and its host side) where a protocol needs to find it from
// both ends. The hash is open-addressed with linear probing and
// backward-shift deletion: no tombstones. The hash is keyed with a random
// seed so that a guest cannot aim for collisions.
//
// Memory is taken by need, not for the capacity up front (the C original's
// 2^17 flows would otherwise cost 30 MB resident before the first packet):
// the zero value of every per-slot array means "free" or "unbound", so
// their pages stay untouched until a flow uses them; slots are handed out
// lowest first (the most recently freed one, else the next never used), so
// the protocols' per-slot arrays are touched only up to the peak number of
// flows; and the hash index starts small and doubles when it would pass
// 50% full, a rehash that allocates only when the flow count reaches a new
// power of two, never per packet.
package flow

import (
	"encoding/binary"
	"errors"
	"math/bits"
	"math/rand/v2"
	"net/netip"
)

// Kind is the type of a flow (which protocol owns its slot).
type Kind uint8

const (
	Free Kind = iota
	TCP
	TCPSplice
	UDP
	Ping
	UDPSplice // a UDP flow on pasta's loopback path: two sockets, no frames
)

// Index is a flow's slot number.
type Index int32

// None is the invalid Index.
const None Index = -1

// Key identifies one side of a flow. Addresses are 16 bytes, IPv4 in its
// IPv4-mapped form (::ffff:a.b.c.d), so one key type serves both families.
type Key struct {
	Proto    uint8
	Src, Dst [16]byte
	SrcPort  uint16
	DstPort  uint16
}

// MakeKey builds a key from netip addresses (Unmap'd or not).
func MakeKey(proto uint8, src netip.Addr, srcPort uint16, dst netip.Addr, dstPort uint16) Key {
	return Key{Proto: proto, Src: src.As16(), Dst: dst.As16(), SrcPort: srcPort, DstPort: dstPort}
}

// SrcAddr returns the source address, unmapped for IPv4.
func (k *Key) SrcAddr() netip.Addr { return netip.AddrFrom16(k.Src).Unmap() }

// DstAddr returns the destination address, unmapped for IPv4.
func (k *Key) DstAddr() netip.Addr { return netip.AddrFrom16(k.Dst).Unmap() }

// IsV4 reports whether the key is an IPv4 one.
func (k *Key) IsV4() bool {
	return binary.BigEndian.Uint64(k.Src[:8]) == 0 && binary.BigEndian.Uint32(k.Src[8:12]) == 0xffff
}

// ErrFull is returned when every slot is in use.
var ErrFull = errors.New("flow table full")

// bucket is one entry of the hash index. Its zero value is an empty
// bucket, so that a new index needs no initialising pass.
type bucket struct {
	key  Key
	ref  int32 // the flow's Index + 1; 0: empty
	hash uint32
}

func (b *bucket) empty() bool { return b.ref == 0 }
func (b *bucket) idx() Index  { return Index(b.ref - 1) }
func (b *bucket) set(i Index) { b.ref = int32(i) + 1 }
func (b *bucket) clear()      { b.ref = 0 }

// minBuckets is the hash index's starting size: 4096 buckets (192 KiB),
// enough for 1024 flows with two keys each before the first doubling.
const minBuckets = 4096

// Table is the flow table. Not safe for concurrent use.
type Table struct {
	kinds   []Kind
	keys    [][2]int32 // bucket positions + 1 of a flow's keys, 0 if none
	free    []Index    // stack of freed slots, capacity Cap() from New
	next    Index      // slots [next, Cap()) were never used
	buckets []bucket
	mask    uint32
	nkeys   int // keys bound in buckets
	maxb    int // the index's size for capacity flows of two keys each
	seed    [2]uint64
	count   int
}

// MaxFlows is the C original's capacity: 2^17 - 1.
const MaxFlows = 1<<17 - 1

// New creates a table of capacity flows. Its hash index grows with the
// number of keys bound, up to the size that keeps it at most 50% full when
// every flow has two keys. The per-slot arrays are allocated for capacity
// but not written, so they cost address space, not memory, until used.
func New(capacity int) *Table {
	maxb := 1
	for maxb < 4*capacity {
		maxb <<= 1
	}
	nb := min(maxb, minBuckets)
	return &Table{
		kinds:   make([]Kind, capacity),
		keys:    make([][2]int32, capacity),
		free:    make([]Index, 0, capacity),
		buckets: make([]bucket, nb),
		mask:    uint32(nb - 1),
		maxb:    maxb,
		seed:    [2]uint64{rand.Uint64(), rand.Uint64()},
	}
}

// Cap returns the number of slots.
func (t *Table) Cap() int { return len(t.kinds) }

// Count returns the number of flows in use.
func (t *Table) Count() int { return t.count }

// Kind returns the kind of flow i (Free if unused).
func (t *Table) Kind(i Index) Kind { return t.kinds[i] }

// Alloc takes a free slot for a flow of kind k: the one freed last, else
// the lowest never used, so that the slots in use stay packed low.
func (t *Table) Alloc(k Kind) (Index, error) {
	var i Index
	if n := len(t.free); n > 0 {
		i = t.free[n-1]
		t.free = t.free[:n-1]
	} else if int(t.next) < len(t.kinds) {
		i = t.next
		t.next++
	} else {
		return None, ErrFull
	}
	t.kinds[i] = k
	t.count++
	return i, nil
}

// Free unhooks every key of flow i and returns its slot.
func (t *Table) Free(i Index) {
	if t.kinds[i] == Free {
		return
	}
	t.Unbind(i, 0)
	t.Unbind(i, 1)
	t.kinds[i] = Free
	t.free = append(t.free, i)
	t.count--
}

func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// hash is a keyed multiply-mix hash over the key's 37 bytes (in the spirit
// of wyhash): fast, allocation-free, and seeded per process.
func (t *Table) hash(k *Key) uint32 {
	const p0, p1 = 0xa0761d6478bd642f, 0xe7037ed1a0b428db
	s0 := binary.LittleEndian.Uint64(k.Src[:8])
	s1 := binary.LittleEndian.Uint64(k.Src[8:])
	d0 := binary.LittleEndian.Uint64(k.Dst[:8])
	d1 := binary.LittleEndian.Uint64(k.Dst[8:])
	x := uint64(k.Proto)<<32 | uint64(k.SrcPort)<<16 | uint64(k.DstPort)
	h := mix(s0^t.seed[0], s1^p0)
	h = mix(h^d0, d1^t.seed[1])
	h = mix(h^x, p1)
	return uint32(h ^ h>>32)
}

// ErrKeyInUse is returned by Bind when the key already names a flow.
var ErrKeyInUse = errors.New("flow key already in use")

// Bind makes key k (slot 0 or 1 of the flow's keys) find flow i. It fails
// with ErrKeyInUse if k already names a flow.
func (t *Table) Bind(i Index, slot int, k *Key) error {
	h := t.hash(k)
	if _, ok := t.find(k, h); ok {
		return ErrKeyInUse
	}
	if 2*(t.nkeys+1) > len(t.buckets) && len(t.buckets) < t.maxb {
		t.grow()
	}
	p := t.insert(k, h, i)
	t.keys[i][slot] = int32(p) + 1
	t.nkeys++
	return nil
}

// find returns the bucket position of key k (hash h), if bound.
func (t *Table) find(k *Key, h uint32) (uint32, bool) {
	for p := h & t.mask; ; p = (p + 1) & t.mask {
		b := &t.buckets[p]
		if b.empty() {
			return 0, false
		}
		if b.hash == h && b.key == *k {
			return p, true
		}
	}
}

// insert puts key k (hash h, not bound yet) for flow i in the first empty
// bucket of its probe run and returns the position.
func (t *Table) insert(k *Key, h uint32, i Index) uint32 {
	p := h & t.mask
	for !t.buckets[p].empty() {
		p = (p + 1) & t.mask
	}
	b := &t.buckets[p]
	b.key, b.hash = *k, h
	b.set(i)
	return p
}

// grow doubles the hash index and re-inserts every key, updating the
// positions the flows keep of their keys. It allocates: it runs when the
// number of bound keys first passes a new power of two, at flow set-up.
func (t *Table) grow() {
	old := t.buckets
	t.buckets = make([]bucket, 2*len(old))
	t.mask = uint32(len(t.buckets) - 1)
	for q := range old {
		b := &old[q]
		if b.empty() {
			continue
		}
		i := b.idx()
		p := t.insert(&b.key, b.hash, i)
		for s := 0; s < 2; s++ {
			if t.keys[i][s] == int32(q)+1 {
				t.keys[i][s] = int32(p) + 1
			}
		}
	}
}

// Lookup returns the flow that key k names.
func (t *Table) Lookup(k *Key) (Index, bool) {
	p, ok := t.find(k, t.hash(k))
	if !ok {
		return None, false
	}
	return t.buckets[p].idx(), true
}

// Key returns key slot of flow i, if bound.
func (t *Table) Key(i Index, slot int) (*Key, bool) {
	p := t.keys[i][slot]
	if p == 0 {
		return nil, false
	}
	return &t.buckets[p-1].key, true
}

// Unbind removes key slot of flow i from the index, shifting later entries
// of the probe run back so that lookups never need tombstones.
func (t *Table) Unbind(i Index, slot int) {
	p := t.keys[i][slot]
	if p == 0 {
		return
	}
	t.keys[i][slot] = 0
	t.nkeys--
	hole := uint32(p - 1)
	t.buckets[hole].clear()
	for q := (hole + 1) & t.mask; !t.buckets[q].empty(); q = (q + 1) & t.mask {
		b := &t.buckets[q]
		home := b.hash & t.mask
		// Move b into the hole if its home position is not in the
		// cyclic range (hole, q]: then the hole lies on its probe path.
		if (q-home)&t.mask >= (q-hole)&t.mask {
			t.buckets[hole] = *b
			owner := b.idx()
			for s := 0; s < 2; s++ {
				if t.keys[owner][s] == int32(q)+1 {
					t.keys[owner][s] = int32(hole) + 1
				}
			}
			b.clear()
			hole = q
		}
	}
}
