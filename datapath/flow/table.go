// Package flow is the flow table shared by every protocol: a fixed number of
// slots (one per TCP connection, UDP flow or ping flow), allocated at
// start-up, and a hash index from a flow's addresses to its slot.
//
// Theory of operation: a flow is identified by a Key: protocol, and the
// addresses and ports of one of its sides as gopasst sees them (for the
// guest side: the guest's address and port, and the address and port the
// guest talks to). Each protocol keeps its per-flow state in its own array
// indexed by the slot number (Index), so the table itself holds only what
// every flow has: its kind and keys. A flow can be reachable under two keys
// (its guest side and its host side) where a protocol needs to find it from
// both ends. The hash is open-addressed with linear probing and
// backward-shift deletion: no tombstones, no rehash, no allocation after
// New. The hash is keyed with a random seed so that a guest cannot aim for
// collisions.
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

type bucket struct {
	key  Key
	idx  Index // None: empty
	hash uint32
}

// Table is the flow table. Not safe for concurrent use.
type Table struct {
	kinds   []Kind
	keys    [][2]int32 // bucket positions of a flow's keys, -1 if none
	free    []Index    // stack of free slots
	buckets []bucket
	mask    uint32
	seed    [2]uint64
	count   int
}

// MaxFlows is the C original's capacity: 2^17 - 1.
const MaxFlows = 1<<17 - 1

// New creates a table of capacity flows, with a hash index at most 50%
// full even when every flow has two keys.
func New(capacity int) *Table {
	nb := 1
	for nb < 4*capacity {
		nb <<= 1
	}
	t := &Table{
		kinds:   make([]Kind, capacity),
		keys:    make([][2]int32, capacity),
		free:    make([]Index, capacity),
		buckets: make([]bucket, nb),
		mask:    uint32(nb - 1),
		seed:    [2]uint64{rand.Uint64(), rand.Uint64()},
	}
	for i := range t.free {
		t.free[i] = Index(capacity - 1 - i)
		t.keys[i] = [2]int32{-1, -1}
	}
	for i := range t.buckets {
		t.buckets[i].idx = None
	}
	return t
}

// Cap returns the number of slots.
func (t *Table) Cap() int { return len(t.kinds) }

// Count returns the number of flows in use.
func (t *Table) Count() int { return t.count }

// Kind returns the kind of flow i (Free if unused).
func (t *Table) Kind(i Index) Kind { return t.kinds[i] }

// Alloc takes a free slot for a flow of kind k.
func (t *Table) Alloc(k Kind) (Index, error) {
	n := len(t.free)
	if n == 0 {
		return None, ErrFull
	}
	i := t.free[n-1]
	t.free = t.free[:n-1]
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

// Bind makes key k (slot 0 or 1 of the flow's keys) find flow i. It fails
// if k already names a flow.
func (t *Table) Bind(i Index, slot int, k *Key) error {
	h := t.hash(k)
	p := h & t.mask
	for {
		b := &t.buckets[p]
		if b.idx == None {
			b.key, b.idx, b.hash = *k, i, h
			t.keys[i][slot] = int32(p)
			return nil
		}
		if b.hash == h && b.key == *k {
			return errors.New("flow key already in use")
		}
		p = (p + 1) & t.mask
	}
}

// Lookup returns the flow that key k names.
func (t *Table) Lookup(k *Key) (Index, bool) {
	h := t.hash(k)
	p := h & t.mask
	for {
		b := &t.buckets[p]
		if b.idx == None {
			return None, false
		}
		if b.hash == h && b.key == *k {
			return b.idx, true
		}
		p = (p + 1) & t.mask
	}
}

// Key returns key slot of flow i, if bound.
func (t *Table) Key(i Index, slot int) (*Key, bool) {
	p := t.keys[i][slot]
	if p < 0 {
		return nil, false
	}
	return &t.buckets[p].key, true
}

// Unbind removes key slot of flow i from the index, shifting later entries
// of the probe run back so that lookups never need tombstones.
func (t *Table) Unbind(i Index, slot int) {
	p := t.keys[i][slot]
	if p < 0 {
		return
	}
	t.keys[i][slot] = -1
	hole := uint32(p)
	t.buckets[hole].idx = None
	for q := (hole + 1) & t.mask; t.buckets[q].idx != None; q = (q + 1) & t.mask {
		b := &t.buckets[q]
		home := b.hash & t.mask
		// Move b into the hole if its home position is not in the
		// cyclic range (hole, q]: then the hole lies on its probe path.
		if (q-home)&t.mask >= (q-hole)&t.mask {
			t.buckets[hole] = *b
			owner := b.idx
			for s := 0; s < 2; s++ {
				if t.keys[owner][s] == int32(q) {
					t.keys[owner][s] = int32(hole)
				}
			}
			b.idx = None
			hole = q
		}
	}
}
