// mem.go: the guest's memory (one memfd, two regions) and the split
// virtqueues laid out in it, from the driver's side.

package main

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Frame and buffer sizes.
const (
	vnetHdrLen = 12 // virtio_net_hdr_v1 (VERSION_1: always 12 bytes)
	ethHdrLen  = 14
	// maxFrame is the largest frame either way: a 65535-byte IP packet
	// behind an Ethernet header and a VLAN tag (a segment from a tap with
	// TSO, or from a back end with GUEST_TSO).
	maxFrame = 65535 + ethHdrLen + 4
	// frameBufLen holds a header and a largest frame: each TX buffer, and
	// each RX buffer without MRG_RXBUF.
	frameBufLen = (vnetHdrLen + maxFrame + 63) &^ 63
	// mrgBufLen is an RX buffer's default with MRG_RXBUF: a page, as a
	// Linux guest posts for large packets.
	mrgBufLen = 4096
	pageSize  = 4096
)

// Guest physical bases of the two regions: far from any address the
// peer's own mappings have, so that a back end translating a descriptor
// (a GPA) as a ring address (a QVA), or the reverse, fails at once.
const (
	gpaLow  = 0x4000_0000   // rings and TX buffers
	gpaHigh = 0x1_0000_0000 // RX buffers
)

// Descriptor and ring flags (virtio 1.x, split virtqueues).
const (
	descNext        = 1
	descWrite       = 2
	descIndirect    = 4
	availNoInterupt = 1 // avail.flags: the driver wants no interrupts
	usedNoNotify    = 1 // used.flags: the device wants no kicks
)

// desc is one entry of the descriptor table (little-endian host).
type desc struct {
	addr  uint64
	len   uint32
	flags uint16
	next  uint16
}

// usedElem is one entry of the used ring.
type usedElem struct {
	id, len uint32
}

// ring is one split virtqueue from the driver's side: the descriptor
// table, the avail ring (ours to write) and the used ring (the back end's),
// inside guest memory.
type ring struct {
	n    int
	desc []desc
	// availHdr and usedHdr are the {flags, idx} words at the start of
	// each ring, loaded and stored whole (sync/atomic has no 16-bit
	// operations): idx is the high half on a little-endian host.
	availHdr   *uint32
	availRing  []uint16
	usedEvent  *uint32 // low half: used_event, after avail.ring[n]
	usedHdr    *uint32
	usedRing   []usedElem
	availEvent *uint32 // low half: avail_event, after used.ring[n]

	// Offsets of the three parts in region 0, for SET_VRING_ADDR.
	descOff, availOff, usedOff uint64

	availIdx  uint16 // next avail index to publish (our shadow)
	lastUsed  uint16 // next used entry to read
	availFlag uint16 // avail.flags as we last stored it
	eventIdx  bool   // EVENT_IDX negotiated
	published uint16 // avail index at the last kick decision
}

// ringBytes returns the bytes of region 0 that a ring of n entries takes
// (each part page-aligned) and the offsets of its parts from its start.
func ringBytes(n int) (size, descOff, availOff, usedOff int) {
	align := func(x int) int { return (x + pageSize - 1) &^ (pageSize - 1) }
	descOff = 0
	availOff = align(16 * n)
	usedOff = availOff + align(6+2*n+2) // +2: room to store used_event as a word
	size = usedOff + align(6+8*n+2)
	return
}

// fence is a full memory barrier (a locked instruction on amd64): between
// arming interrupts (or publishing) and reading what the other side wrote.
func fence() { atomic.AddUint32(&fenceWord, 0) }

var fenceWord uint32

// guestMem is the guest's memory and its rings.
type guestMem struct {
	fd      int // the memfd, sent with SET_MEM_TABLE
	mem     []byte
	base    uint64 // address of mem[0] in our address space
	regions []region
	rx, tx  *ring
	// Where each queue's buffers start in mem, and their size.
	rxBufOff, txBufOff int
	rxBufLen, txBufLen int
}

// newGuestMem makes the memory for two queues of n entries, RX buffers of
// rxBuf bytes and TX buffers of frameBufLen: a memfd, mapped shared. Region
// 0 (at gpaLow) holds both rings and the TX buffers, region 1 (at gpaHigh,
// the file's next bytes) the RX buffers.
func newGuestMem(n, rxBuf int) (*guestMem, error) {
	rsize, _, _, _ := ringBytes(n)
	low := 2*rsize + n*frameBufLen
	low = (low + pageSize - 1) &^ (pageSize - 1)
	high := (n*rxBuf + pageSize - 1) &^ (pageSize - 1)
	fd, err := unix.MemfdCreate("vhostpeer-guest", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	if err := unix.Ftruncate(fd, int64(low+high)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("guest memory of %d bytes: %w", low+high, err)
	}
	mem, err := unix.Mmap(fd, 0, low+high, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mmap guest memory: %w", err)
	}
	g := &guestMem{fd: fd, mem: mem, base: uint64(uintptr(unsafe.Pointer(&mem[0])))}
	g.regions = []region{
		{gpa: gpaLow, size: uint64(low), qva: g.base, offset: 0},
		{gpa: gpaHigh, size: uint64(high), qva: g.base + uint64(low), offset: uint64(low)},
	}
	g.rx = g.layRing(0, n)
	g.tx = g.layRing(rsize, n)
	g.txBufOff, g.txBufLen = 2*rsize, frameBufLen
	g.rxBufOff, g.rxBufLen = low, rxBuf
	return g, nil
}

// close unmaps the memory and closes the memfd.
func (g *guestMem) close() {
	unix.Munmap(g.mem)
	unix.Close(g.fd)
}

// layRing returns the ring of n entries at offset off of mem.
func (g *guestMem) layRing(off, n int) *ring {
	_, d, a, u := ringBytes(n)
	r := &ring{n: n, descOff: uint64(off + d), availOff: uint64(off + a), usedOff: uint64(off + u)}
	p := unsafe.Pointer(&g.mem[off])
	r.desc = unsafe.Slice((*desc)(unsafe.Add(p, d)), n)
	r.availHdr = (*uint32)(unsafe.Add(p, a))
	r.availRing = unsafe.Slice((*uint16)(unsafe.Add(p, a+4)), n)
	r.usedEvent = (*uint32)(unsafe.Add(p, a+4+2*n))
	r.usedHdr = (*uint32)(unsafe.Add(p, u))
	r.usedRing = unsafe.Slice((*usedElem)(unsafe.Add(p, u+4)), n)
	r.availEvent = (*uint32)(unsafe.Add(p, u+4+8*n))
	return r
}

// reset zeroes both rings (a device reset: the next start begins at index
// 0 with nothing posted).
func (g *guestMem) reset() {
	for _, r := range []*ring{g.rx, g.tx} {
		clear(g.mem[r.descOff : r.usedOff+uint64(6+8*r.n+2)])
		r.availIdx, r.lastUsed, r.availFlag, r.published = 0, 0, 0, 0
	}
}

// qva returns the address, in our address space, of offset off of mem.
func (g *guestMem) qva(off uint64) uint64 { return g.base + off }

// gpa returns the guest physical address of offset off of mem.
func (g *guestMem) gpa(off int) uint64 {
	for _, r := range g.regions {
		if uint64(off) >= r.offset && uint64(off) < r.offset+r.size {
			return r.gpa + uint64(off) - r.offset
		}
	}
	panic(fmt.Sprintf("offset %d outside guest memory", off)) // our own layout's bug
}

// rxBuf returns RX buffer i.
func (g *guestMem) rxBuf(i int) []byte {
	o := g.rxBufOff + i*g.rxBufLen
	return g.mem[o : o+g.rxBufLen : o+g.rxBufLen]
}

// txBuf returns TX buffer i.
func (g *guestMem) txBuf(i int) []byte {
	o := g.txBufOff + i*g.txBufLen
	return g.mem[o : o+g.txBufLen : o+g.txBufLen]
}

// fillDescs writes both descriptor tables once: descriptor i of each queue
// is buffer i, alone (no chains), writable on RX, readable on TX (whose
// lengths are set per frame).
func (g *guestMem) fillDescs() {
	for i := 0; i < g.rx.n; i++ {
		g.rx.desc[i] = desc{addr: g.gpa(g.rxBufOff + i*g.rxBufLen), len: uint32(g.rxBufLen), flags: descWrite}
	}
	for i := 0; i < g.tx.n; i++ {
		g.tx.desc[i] = desc{addr: g.gpa(g.txBufOff + i*g.txBufLen)}
	}
}

// usedIdx returns the back end's used index (an acquire load: the entries
// before it are visible once this is).
func (r *ring) usedIdx() uint16 { return uint16(atomic.LoadUint32(r.usedHdr) >> 16) }

// usedFlags returns the back end's used.flags.
func (r *ring) usedFlags() uint16 { return uint16(atomic.LoadUint32(r.usedHdr)) }

// post puts head in the avail ring (not published yet).
func (r *ring) post(head uint16) {
	r.availRing[int(r.availIdx)&(r.n-1)] = head
	r.availIdx++
}

// publish makes the posted heads visible: avail.idx, stored with the
// flags as one word, after the ring slots (a release store).
func (r *ring) publish() {
	atomic.StoreUint32(r.availHdr, uint32(r.availIdx)<<16|uint32(r.availFlag))
}

// needKick reports whether the back end wants a kick for what was
// published since the last call: with EVENT_IDX when the new avail index
// passed its avail_event, else when it has not set NO_NOTIFY. The caller
// published first; the full barrier orders that before these loads.
func (r *ring) needKick() bool {
	old, cur := r.published, r.availIdx
	r.published = cur
	if old == cur {
		return false
	}
	fence()
	if r.eventIdx {
		ev := uint16(atomic.LoadUint32(r.availEvent))
		return cur-ev-1 < cur-old
	}
	return r.usedFlags()&usedNoNotify == 0
}

// interrupts arms (on) or disarms the back end's notifications of used
// entries: with EVENT_IDX, used_event at the next entry we will read, or
// half the index space away; else NO_INTERRUPT in avail.flags. Arming is
// followed by a full barrier: the caller then looks at the used index
// again before it sleeps.
func (r *ring) interrupts(on bool) {
	if r.eventIdx {
		ev := r.lastUsed
		if !on {
			ev += 0x8000
		}
		atomic.StoreUint32(r.usedEvent, uint32(ev))
	} else {
		if on {
			r.availFlag = 0
		} else {
			r.availFlag = availNoInterupt
		}
		r.publish()
	}
	if on {
		fence()
	}
}
