// Frames towards the guest (the RX ring, queue 0): tap.Out. Producers fill
// our staging buffers (Frame, Reserve) and each Commit copies the frame at
// once into the guest's receive buffers, after its virtio-net header, over
// as many chains as mergeable receive buffers allow; Flush (the end of the
// loop turn) publishes the used entries and interrupts the guest once for
// the whole batch.

package vhostuser

import (
	"encoding/binary"

	"gopasst/datapath/tap"
)

// Theory of operation
//
// Staging. Frame and Reserve hand out buffers of MaxFrame bytes from a
// ring of queueLen of them, starting at the first uncommitted one; Commit
// takes them in order. The copy into guest memory happens in Commit, right
// after the producer wrote the frame (a TCP peek, still in the cache), so
// a buffer is free again as soon as it is committed: there is no queue of
// frames to flush, only used entries to publish. One copy from the host
// socket into the staging buffer, one into the guest: the price of the
// Out interface's contiguous buffers, since a guest posts receive buffers
// of a page or two and a 64 KiB frame lands in many of them.
//
// Chains per frame. With MRG_RXBUF a frame takes chains until its header
// and bytes fit, each chain one used entry with the bytes written to it,
// and num_buffers in the first header says how many; without, one chain
// must hold it all, or the frame is dropped (the chain is given back to
// the avail ring: popping is speculative, lastAvail rewinds). The header
// must fit in the first buffer of the first chain, as every driver lays
// it out (the C original assumes more).
//
// Backpressure. Reserve estimates how many frames the posted buffers
// hold (chains available times the size of the last chain seen, over the
// largest frame) and gives no more; with none at all it refuses, asks for
// RX kicks (publishing first, so that the guest has what it needs to
// refill) and, when the kick comes with buffers, Ready reports
// EventWritable. A frame that still finds no room at Commit is dropped and
// counted, as a full tap queue drops.
//
// Offloads. Offloads says Csum and TSO whatever the front end negotiates
// (it cannot change while the engine runs, and is asked before any front
// end connects); a frame using one the guest did not ack is completed here
// (checksum, then software segmentation into MSS-sized frames, gso.go), so
// that the guest only ever sees what it agreed to.

// rxState is the RX side of the Backend.
type rxState struct {
	slots   [][]byte // staging buffers
	cur     int      // first uncommitted slot
	refused bool     // Reserve refused for want of buffers: EventWritable due at the next kick with buffers
	lastCap int      // bytes of the last chain popped: the estimate of a chain's size
	c       chain
	heads   [maxQueueSize]uint16 // chains of the frame being written
	lens    [maxQueueSize]uint32
	seg     []byte // software segmentation output (gso.go)
}

// init allocates the staging buffers.
func (s *rxState) init(queueLen int) {
	queueLen = max(queueLen, 1)
	mem := make([]byte, queueLen*tap.MaxFrame)
	s.slots = make([][]byte, queueLen)
	for i := range s.slots {
		s.slots[i] = mem[i*tap.MaxFrame : (i+1)*tap.MaxFrame : (i+1)*tap.MaxFrame]
	}
	s.seg = make([]byte, tap.MaxFrame)
}

// Offloads implements tap.Out: checksum and TCP segmentation offload,
// done here when the guest did not negotiate them (see the theory of
// operation); none with a capture, so that it records complete frames.
func (b *Backend) Offloads() tap.Offloads {
	if b.pcap != nil {
		return tap.Offloads{}
	}
	return tap.Offloads{Csum: true, TSO: true}
}

// Frame implements tap.Out: the first uncommitted staging buffer, MaxFrame
// bytes.
func (b *Backend) Frame() []byte { return b.rx.slots[b.rx.cur] }

// Reserve implements tap.Out: the next staging buffers, as many as asked
// and as the guest's posted buffers are estimated to hold, at least one
// while it has posted any; none while it has none (and EventWritable
// follows when it posts some). With no guest rings in service it gives
// them all, and their frames are dropped at Commit, as frames towards an
// absent guest are.
func (b *Backend) Reserve(bufs [][]byte) int {
	s := &b.rx
	n := min(len(bufs), len(s.slots))
	if b.rxUp() {
		r := &b.vq[rxQ]
		p := r.pending()
		if p == 0 {
			// Publish what is done, so that the guest can take it
			// and refill, and ask to hear when it did.
			b.flushRX()
			s.refused = true
			r.wantKicks(true)
			if p = r.pending(); p == 0 {
				b.Stats.Starved++
				return 0
			}
		}
		fit := p
		if b.acked&fNetMrgRxbuf != 0 && s.lastCap > 0 {
			fit = p * s.lastCap / (b.vnetLen + tap.MaxFrame)
		}
		n = min(n, max(fit, 1))
	}
	for i := 0; i < n; i++ {
		bufs[i] = b.rx.slots[(s.cur+i)%len(s.slots)]
	}
	return n
}

// Commit implements tap.Out: the frame in the next uncommitted buffer, n
// bytes, complete, goes into the guest's buffers now.
func (b *Backend) Commit(n int) {
	f := b.rx.slots[b.rx.cur][:n]
	b.rx.cur = (b.rx.cur + 1) % len(b.rx.slots)
	b.deliver(f, nil)
}

// CommitOffload implements tap.Out: Commit for a frame with the offloads
// h describes, carried to the guest in its virtio-net header, or done here
// if the guest did not negotiate them.
func (b *Backend) CommitOffload(n int, h *tap.VnetHdr) {
	f := b.rx.slots[b.rx.cur][:n]
	b.rx.cur = (b.rx.cur + 1) % len(b.rx.slots)
	b.deliver(f, h)
}

// Flush implements tap.Out: the used entries of the frames committed, and
// of the guest's frames read since the last Read, are published, with one
// interrupt per ring if the guest wants it.
func (b *Backend) Flush() {
	b.flushRX()
	b.tx.complete(b)
}

// flushRX publishes the RX ring's used entries and interrupts the guest
// if it asks for it.
func (b *Backend) flushRX() {
	r := &b.vq[rxQ]
	if r.used == nil || r.bad {
		return
	}
	if r.publish() {
		b.signal(rxQ)
	}
}

// rxKicked handles an RX kick: buffers posted. If a producer was refused
// and there are buffers now, kicks are suppressed again and producers may
// go on (EventWritable).
func (b *Backend) rxKicked() tap.Event {
	if !b.rx.refused || !b.rxUp() {
		return 0
	}
	r := &b.vq[rxQ]
	if r.pending() == 0 {
		return 0
	}
	b.rx.refused = false
	r.wantKicks(false)
	return tap.EventWritable
}

// deliver sends frame f with offloads h (nil: complete) to the guest,
// doing the offloads it did not negotiate.
func (b *Backend) deliver(f []byte, h *tap.VnetHdr) {
	if !b.rxUp() {
		b.Stats.DroppedOut++
		return
	}
	if b.pcap != nil {
		b.pcap.Write(f)
	}
	if h == nil || (h.Flags&tap.VnetNeedsCsum == 0 && h.GSOType == tap.GSONone) {
		b.deliver1(f, nil)
		return
	}
	if h.GSOType != tap.GSONone && !b.guestGSO(h.GSOType) {
		b.segment(f, h)
		return
	}
	if h.Flags&tap.VnetNeedsCsum != 0 && b.acked&fNetGuestCsum == 0 {
		if !completeCsum(f, h) {
			b.dropBadOffload()
			return
		}
		b.Stats.SoftCsum++
		b.deliver1(f, nil)
		return
	}
	b.deliver1(f, h)
}

// guestGSO reports whether the guest negotiated segmentation offload of
// type t (ECN bit aside).
func (b *Backend) guestGSO(t uint8) bool {
	switch t &^ tap.GSOECN {
	case tap.GSOTCPv4:
		return b.acked&fNetGuestTSO4 != 0
	case tap.GSOTCPv6:
		return b.acked&fNetGuestTSO6 != 0
	}
	return false
}

// dropBadOffload drops a frame whose offload description does not match
// it (a producer's bug, not the guest's), logged once.
func (b *Backend) dropBadOffload() {
	b.Stats.DroppedOut++
	b.logOnce(logGSO, "vhost-user: frame with offloads that do not match it: dropped (logged once)")
}

// deliver1 copies frame f, after its virtio-net header (h's fields, or
// zero), into the guest's receive buffers: see the theory of operation.
// Dropped and counted if the buffers do not hold it.
func (b *Backend) deliver1(f []byte, h *tap.VnetHdr) {
	r := &b.vq[rxQ]
	s := &b.rx
	c := &s.c
	mrg := b.acked&fNetMrgRxbuf != 0
	vl := b.vnetLen
	total := vl + len(f)
	var hdr []byte // where the header goes, in the first chain's first buffer
	nbuf := 0
	off := 0     // bytes of header and frame placed
	bad := false // a bad chain came between this frame's chains: no rewinding past it
	for off < total {
		switch r.pop(&b.mem, c, true) {
		case popEmpty:
			b.rxNoRoom(nbuf, bad, logNoBuffers)
			return
		case popBroken:
			b.brokenRing(rxQ)
			b.Stats.DroppedOut++
			return
		case popBad:
			b.badChain(rxQ, c)
			bad = bad || nbuf > 0
			continue
		}
		if nbuf == 0 {
			if c.n == 0 || len(c.segs[0]) < vl {
				c.why = "first buffer shorter than the virtio-net header"
				b.badChain(rxQ, c)
				continue
			}
			hdr = c.segs[0][:vl]
			off = vl
		}
		w := 0
		if nbuf == 0 {
			w = vl
		}
		for i := 0; i < c.n && off < total; i++ {
			seg := c.segs[i]
			if nbuf == 0 && i == 0 {
				seg = seg[vl:]
			}
			k := copy(seg, f[off-vl:])
			off += k
			w += k
		}
		s.lastCap = c.bytes
		s.heads[nbuf], s.lens[nbuf] = c.head, uint32(w)
		nbuf++
		if off < total && !mrg {
			b.rxNoRoom(nbuf, bad, logTooBig)
			return
		}
	}
	var vh [12]byte
	if h != nil {
		h.Encode(vh[:])
	}
	if vl == 12 {
		binary.LittleEndian.PutUint16(vh[10:], uint16(nbuf))
	}
	copy(hdr, vh[:vl])
	for i := 0; i < nbuf; i++ {
		r.push(s.heads[i], s.lens[i])
	}
	b.Stats.FramesOut++
	b.Stats.BytesOut += uint64(len(f))
	if nbuf > 1 {
		b.Stats.MergedFrames++
		if uint64(nbuf) > b.Stats.MaxBuffersPerFrame {
			b.Stats.MaxBuffersPerFrame = uint64(nbuf)
		}
	}
}

// rxNoRoom drops the frame being written, whose nbuf chains are given back
// to the avail ring: the guest's buffers did not hold it (kind
// logNoBuffers: none left, which asks for a kick so that producers hear
// when there are; logTooBig: one chain too short without mergeable
// buffers). If a bad chain (already returned as used) lies between them
// (bad), the avail ring cannot rewind past it: they are returned used,
// with nothing written, instead (the guest drops such entries).
func (b *Backend) rxNoRoom(nbuf int, bad bool, kind uint32) {
	r := &b.vq[rxQ]
	if bad {
		for i := 0; i < nbuf; i++ {
			r.push(b.rx.heads[i], 0)
		}
	} else {
		r.lastAvail -= uint16(nbuf)
	}
	b.Stats.DroppedOut++
	if kind == logTooBig {
		b.logOnce(logTooBig, "vhost-user: frame larger than the guest's receive buffer (no mergeable buffers): dropped (logged once)")
		return
	}
	b.rx.refused = true
	r.wantKicks(true)
}
