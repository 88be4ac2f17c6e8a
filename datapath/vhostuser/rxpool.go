// The RX chain pool: chains popped from the guest's avail ring and not
// used yet, sorted by where their buffer lies in guest memory, from which
// direct views (runs of buffers end to end) are cut and staged frames
// take their chains. See rx.go's theory of operation.

package vhostuser

import (
	"gopasst/datapath/tap"
)

// multiKey is the pool key of a chain of several buffers: never part of
// a run, sorted last.
const multiKey = ^uint64(0)

// poolEnt is one chain held: its head, the avail index it was popped
// from, and, for a chain of a single buffer, where that lies (region
// index << 56 | offset in the region) and its length.
type poolEnt struct {
	key       uint64
	l         uint32
	head, seq uint16
}

// entFor describes chain c, just walked, for the pool.
func (b *Backend) entFor(c *chain) poolEnt {
	e := poolEnt{key: multiKey, l: uint32(c.bytes), head: c.head, seq: c.seq}
	if c.n != 1 {
		return e
	}
	a := addrOf(c.segs[0])
	for i := 0; i < b.mem.n; i++ {
		r := &b.mem.r[i]
		s := addrOf(r.mem)
		if a >= s && a < s+uintptr(len(r.mem)) {
			e.key = uint64(i)<<56 | uint64(a-s)
			return e
		}
	}
	return e
}

// adjacent reports whether chain e's buffer ends where f's begins, in
// the same region.
func adjacent(e, f *poolEnt) bool {
	return e.key != multiKey && f.key != multiKey && e.key>>56 == f.key>>56 && e.key+uint64(e.l) == f.key
}

// poolPut adds e to the pool, in key order. Returns its index.
func (b *Backend) poolPut(e poolEnt) int {
	s := &b.rx
	if s.poolN == len(s.pool) {
		return -1 // cannot be: at most the ring size is popped
	}
	i := s.poolN
	for i > 0 && s.pool[i-1].key > e.key {
		s.pool[i] = s.pool[i-1]
		i--
	}
	s.pool[i] = e
	s.poolN++
	return i
}

// poolTake removes and returns entries [i, i+k) of the pool into dst.
func (b *Backend) poolTake(i, k int, dst []poolEnt) {
	s := &b.rx
	copy(dst, s.pool[i:i+k])
	copy(s.pool[i:], s.pool[i+k:s.poolN])
	s.poolN -= k
}

// takeChain takes a chain for a staged frame into c: the pool's first
// (lowest address: runs are cut from the end just as well), else the next
// in the avail ring. ok is false when there is none (or the ring broke,
// which stops it).
func (b *Backend) takeChain(c *chain) (poolEnt, popResult, bool) {
	s := &b.rx
	r := &b.vq[rxQ]
	if s.poolN > 0 {
		var e [1]poolEnt
		b.poolTake(0, 1, e[:])
		res := r.walk(&b.mem, c, e[0].head, true)
		c.seq = e[0].seq
		return e[0], res, true
	}
	switch res := r.pop(&b.mem, c, true); res {
	case popEmpty:
		return poolEnt{}, res, false
	case popBroken:
		b.brokenRing(rxQ)
		return poolEnt{}, res, false
	default:
		return b.entFor(c), res, true
	}
}

// runAt looks for a run through pool entry i: the adjacent entries around
// it, and in them the first window of vnetLen + MaxFrame bytes (one chain
// that large without mergeable buffers). Returns its start and length.
func (b *Backend) runAt(i int, need int, mrg bool) (int, int, bool) {
	s := &b.rx
	p := s.pool[:s.poolN]
	if !mrg {
		if p[i].key != multiKey && int(p[i].l) >= need {
			return i, 1, true
		}
		return 0, 0, false
	}
	lo := i
	for lo > 0 && adjacent(&p[lo-1], &p[lo]) {
		lo--
	}
	have := 0
	for j := lo; j < len(p); j++ {
		if j > lo && !adjacent(&p[j-1], &p[j]) {
			break
		}
		if p[j].key == multiKey {
			break
		}
		have += int(p[j].l)
		if have >= need {
			if j-lo+1 > maxRun {
				return 0, 0, false
			}
			return lo, j - lo + 1, true
		}
	}
	return 0, 0, false
}

// takeRun makes sl a direct view: a run from the pool, popping chains
// from the avail ring into it until one is found or the pool holds
// poolMax chains. Returns false if there was no run.
func (b *Backend) takeRun(sl *rxSlot) bool {
	s := &b.rx
	c := &s.c
	r := &b.vq[rxQ]
	need := b.vnetLen + tap.MaxFrame
	mrg := b.acked&fNetMrgRxbuf != 0
	lo, k, ok := 0, 0, false
	for i := 0; i < s.poolN && !ok; i++ {
		lo, k, ok = b.runAt(i, need, mrg)
	}
	for !ok && s.poolN < poolMax {
		switch r.pop(&b.mem, c, true) {
		case popEmpty:
			return false
		case popBroken:
			b.brokenRing(rxQ)
			return false
		case popBad:
			b.badChain(rxQ, c)
			continue
		}
		s.lastCap = c.bytes
		if i := b.poolPut(b.entFor(c)); i >= 0 {
			lo, k, ok = b.runAt(i, need, mrg)
		}
	}
	if !ok {
		return false
	}
	b.poolTake(lo, k, sl.ents[:k])
	sl.nch = k
	e := &sl.ents[0]
	reg := &b.mem.r[e.key>>56]
	off := int(e.key & (1<<56 - 1))
	run := reg.mem[off : off+need : off+need]
	sl.hdr = run[:b.vnetLen:b.vnetLen]
	sl.view = run[b.vnetLen:need:need]
	sl.direct = true
	return true
}

// releaseRun puts sl's chains back in the pool and makes it a staging
// slot again.
func (b *Backend) releaseRun(sl *rxSlot) {
	for i := 0; i < sl.nch; i++ {
		b.poolPut(sl.ents[i])
	}
	sl.nch, sl.direct, sl.view, sl.hdr = 0, false, nil, nil
}

// rewindPool moves the avail index back over the pool if it holds
// exactly the last chains popped (each pop has its own index, so: if none
// is older than the pool is large). Returns whether the pool is empty.
func (b *Backend) rewindPool() bool {
	s := &b.rx
	r := &b.vq[rxQ]
	if s.poolN == 0 {
		return true
	}
	if r.avail == nil {
		s.poolN = 0
		return true
	}
	k := uint16(s.poolN)
	for i := 0; i < s.poolN; i++ {
		if r.lastAvail-s.pool[i].seq > k {
			return false
		}
	}
	r.lastAvail -= k
	s.poolN = 0
	return true
}

// releaseRX gives back every chain held (uncommitted runs, the pool):
// rewound into the avail ring if possible, else returned used with
// nothing written, and published.
func (b *Backend) releaseRX() {
	s := &b.rx
	for i := range s.slots {
		if s.slots[i].direct {
			b.releaseRun(&s.slots[i])
		}
	}
	if !b.rewindPool() {
		r := &b.vq[rxQ]
		for i := 0; i < s.poolN; i++ {
			r.push(s.pool[i].head, 0)
		}
		s.poolN = 0
	}
	b.flushRX()
}
