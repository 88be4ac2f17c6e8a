// Split virtqueues (virtio 1.x, 2.7): the descriptor table, the avail ring
// the driver (the guest) writes and the used ring we write, all in guest
// memory, every field of them under the guest's control. Popping walks a
// descriptor chain into host slices, checking each descriptor once, from
// one read of it; completing writes used entries, publishes the used index
// and decides, with or without event-idx, whether the guest wants an
// interrupt.

package vhostuser

import (
	"encoding/binary"
	"sync/atomic"
	"unsafe"
)

// Descriptor flags.
const (
	descNext     = 1
	descWrite    = 2
	descIndirect = 4
)

// Ring flags: avail.flags NO_INTERRUPT, used.flags NO_NOTIFY.
const (
	availNoInterrupt = 1
	usedNoNotify     = 1
)

const (
	// maxQueueSize is the largest queue size we take (and the C
	// original's limit, qemu's VIRTQUEUE_MAX_SIZE).
	maxQueueSize = 1024
	// maxSegs is the most host slices one chain may come to, descriptors
	// split at region boundaries included. A Linux guest sends a frame
	// in at most MAX_SKB_FRAGS+2 (19) descriptors.
	maxSegs = 64
	// maxChainBytes bounds the bytes of one chain: more than any frame
	// with its header needs, so that a chain of huge lengths is refused
	// before anything is summed past it.
	maxChainBytes = 1 << 20
)

// popResult is what pop found.
type popResult uint8

const (
	popEmpty  popResult = iota // nothing new in the avail ring
	popOK                      // a chain, in c
	popBad                     // a malformed chain, consumed: c.head is valid if c.headOK
	popBroken                  // the avail ring itself is nonsense: stop the queue
)

// chain is one descriptor chain as pop found it: its head (the id of its
// used entry) and its buffers as host slices in guest memory, in order.
type chain struct {
	head   uint16
	seq    uint16 // the avail index it was popped from
	headOK bool   // head is an index of the table (a bad chain with a valid head is returned to the guest)
	n      int    // slices in segs
	bytes  int    // their total length
	segs   [maxSegs][]byte
	why    string // what was wrong with a bad chain, for the log
}

// vring is one split virtqueue and its notification descriptors.
type vring struct {
	num                           uint32 // queue size, a power of 2 <= maxQueueSize; 0: not set
	descAddr, availAddr, usedAddr uint64 // qemu virtual addresses, as SET_VRING_ADDR gave them
	addrSet                       bool
	desc, avail, used             []byte // host views, nil until resolved

	lastAvail uint16 // next avail index to pop
	usedIdx   uint16 // next used index to write
	pubUsed   uint16 // used index last published
	signalled uint16 // used index at the last interrupt (event-idx)
	sigValid  bool   // signalled is meaningful (false after a (re)start)
	usedFlags uint16 // what we keep in used.flags (NO_NOTIFY or 0)

	kick, call, errFD int // eventfds from qemu, -1 when not set
	started           bool
	enabled           bool
	eventIdx          bool // VIRTIO_RING_F_EVENT_IDX negotiated
	bad               bool // the ring proved nonsense: not served until reconfigured
}

// reset forgets the ring's configuration, but not its descriptors.
func (r *vring) resetState() {
	r.num = 0
	r.descAddr, r.availAddr, r.usedAddr, r.addrSet = 0, 0, 0, false
	r.desc, r.avail, r.used = nil, nil, nil
	r.lastAvail, r.usedIdx, r.pubUsed, r.signalled, r.sigValid, r.usedFlags = 0, 0, 0, 0, false, 0
	r.started, r.enabled, r.bad = false, false, false
}

// ready reports whether the ring can be served: configured, its memory
// resolved, a kick descriptor set (started) and not found broken.
func (r *vring) ready() bool {
	return r.started && r.desc != nil && !r.bad
}

// resolve translates the ring addresses through m (qemu virtual
// addresses) and checks that the whole of each part lies in one region
// and is aligned as we access it: descriptors 16 bytes, avail and used
// rings 4 (avail needs only 2 by the spec, but its first word is read
// atomically; every driver we know aligns it further). Returns "" or what
// was wrong. Without an address or a size it leaves the ring unresolved.
func (r *vring) resolve(m *memTable) string {
	r.desc, r.avail, r.used = nil, nil, nil
	if !r.addrSet || r.num == 0 {
		return ""
	}
	n := uint64(r.num)
	d, ok1 := m.slice(r.descAddr, 16*n, true)
	a, ok2 := m.slice(r.availAddr, 6+2*n, true)
	u, ok3 := m.slice(r.usedAddr, 6+8*n, true)
	if !ok1 || !ok2 || !ok3 {
		return "ring outside guest memory"
	}
	if addrOf(d)%16 != 0 || addrOf(a)%4 != 0 || addrOf(u)%4 != 0 {
		return "ring misaligned"
	}
	r.desc, r.avail, r.used = d, a, u
	return ""
}

// addrOf returns the host address of b's first byte.
func addrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// word returns the 32-bit word at the start of b, which holds a ring's
// flags (low half, little-endian) and index (high half).
func word(b []byte) *uint32 { return (*uint32)(unsafe.Pointer(unsafe.SliceData(b))) }

// availIdx reads avail.idx, atomically with its flags: an acquire, so
// that the ring slots read after it are at least as new.
func (r *vring) availIdx() (idx, flags uint16) {
	w := atomic.LoadUint32(word(r.avail))
	return uint16(w >> 16), uint16(w)
}

// pending returns how many chains the guest has made available beyond
// the ones popped, or 0 for a ring that is not ready (or whose count
// is nonsense: pop says so).
func (r *vring) pending() int {
	if !r.ready() {
		return 0
	}
	idx, _ := r.availIdx()
	n := int(uint16(idx - r.lastAvail))
	if n > int(r.num) {
		return 0
	}
	return n
}

// pop takes the next available chain into c: see walk. An avail index
// more than the ring size ahead makes the ring broken.
//
// Preconditions: r.ready().
func (r *vring) pop(m *memTable, c *chain, writable bool) popResult {
	idx, _ := r.availIdx()
	ahead := uint16(idx - r.lastAvail)
	if ahead == 0 {
		return popEmpty
	}
	if uint32(ahead) > r.num {
		return popBroken
	}
	slot := uint32(r.lastAvail) & (r.num - 1)
	head := binary.LittleEndian.Uint16(r.avail[4+2*slot:])
	seq := r.lastAvail
	r.lastAvail++
	res := r.walk(m, c, head, writable)
	c.seq = seq
	return res
}

// walk reads the chain at head into c: its buffers, all device-writable
// (writable) or all device-readable, translated through m as guest
// physical addresses, split where they cross regions. Every descriptor is
// read once, into locals, and checked before use: an index, a length, an
// address outside guest memory, a chain longer than the ring (a loop), an
// indirect descriptor (not offered), a buffer of the wrong direction make
// the chain bad (popBad: to be returned to the guest unused if its head is
// valid, c.headOK).
func (r *vring) walk(m *memTable, c *chain, head uint16, writable bool) popResult {
	c.n, c.bytes, c.head, c.headOK, c.why = 0, 0, head, false, ""
	if uint32(head) >= r.num {
		c.why = "head index out of range"
		return popBad
	}
	c.headOK = true
	i := uint32(head)
	for steps := uint32(0); ; steps++ {
		if steps >= r.num {
			c.why = "descriptor chain loops"
			return popBad
		}
		d := r.desc[16*i : 16*i+16 : 16*i+16]
		addr := binary.LittleEndian.Uint64(d[0:])
		l := binary.LittleEndian.Uint32(d[8:])
		flags := binary.LittleEndian.Uint16(d[12:])
		next := binary.LittleEndian.Uint16(d[14:])
		if flags&descIndirect != 0 {
			c.why = "indirect descriptor (not negotiated)"
			return popBad
		}
		if (flags&descWrite != 0) != writable {
			c.why = "buffer of the wrong direction"
			return popBad
		}
		if c.bytes+int(l) > maxChainBytes {
			c.why = "chain too long"
			return popBad
		}
		for left := uint64(l); left > 0; {
			p, ok := m.piece(addr, left)
			if !ok {
				c.why = "buffer outside guest memory"
				return popBad
			}
			if c.n == maxSegs {
				c.why = "too many buffers"
				return popBad
			}
			c.segs[c.n] = p
			c.n++
			addr += uint64(len(p))
			left -= uint64(len(p))
		}
		c.bytes += int(l)
		if flags&descNext == 0 {
			return popOK
		}
		if uint32(next) >= r.num {
			c.why = "next index out of range"
			return popBad
		}
		i = uint32(next)
	}
}

// push writes the used entry of chain head, len bytes written to it (0
// for a TX chain), at the next used index. The guest sees it only once
// publish has run.
func (r *vring) push(head uint16, l uint32) {
	slot := uint32(r.usedIdx) & (r.num - 1)
	e := r.used[4+8*slot : 12+8*slot : 12+8*slot]
	binary.LittleEndian.PutUint32(e[0:], uint32(head))
	binary.LittleEndian.PutUint32(e[4:], l)
	r.usedIdx++
}

// publish makes the used entries written since the last call visible (a
// release: entries before index) and reports whether the guest wants an
// interrupt for them: with event-idx, if the new entries pass used_event
// (read after a full barrier: Go's atomic store is one), always for the
// first batch after a start; without, unless avail.flags says
// NO_INTERRUPT.
func (r *vring) publish() bool {
	if r.usedIdx == r.pubUsed {
		return false
	}
	atomic.StoreUint32(word(r.used), uint32(r.usedIdx)<<16|uint32(r.usedFlags))
	r.pubUsed = r.usedIdx
	if !r.eventIdx {
		_, flags := r.availIdx()
		return flags&availNoInterrupt == 0
	}
	ev := binary.LittleEndian.Uint16(r.avail[4+2*r.num:])
	old, valid := r.signalled, r.sigValid
	r.signalled, r.sigValid = r.usedIdx, true
	return !valid || uint16(r.usedIdx-ev-1) < uint16(r.usedIdx-old)
}

// wantKicks asks the guest for kicks (on) or tells it they are not
// needed (off): with event-idx, avail_event is set to the avail index as
// it stands (a kick as soon as the guest adds anything beyond what it has
// posted: for RX, the chains already posted may not be enough) or left
// alone; without,
// used.flags NO_NOTIFY. A caller turning kicks on must re-check the avail
// ring afterwards (pending): the guest may have added buffers before it
// saw the request. The store of used.flags goes with the next publish,
// or at once here.
func (r *vring) wantKicks(on bool) {
	if r.eventIdx {
		if on {
			idx, _ := r.availIdx()
			binary.LittleEndian.PutUint16(r.used[4+8*r.num:], idx)
		}
	} else {
		f := uint16(usedNoNotify)
		if on {
			f = 0
		}
		if f == r.usedFlags {
			return
		}
		r.usedFlags = f
	}
	// Full barrier (and used.flags if it changed) before the caller
	// looks at the avail ring again.
	atomic.StoreUint32(word(r.used), uint32(r.pubUsed)<<16|uint32(r.usedFlags))
}
