// Frames towards the guest (the RX ring, queue 0): tap.Out. Where the
// guest's receive buffers allow it, Reserve hands out views of them, so
// that the producer's read from the host socket is the only copy; else
// producers fill our staging buffers and Commit copies each frame into the
// guest's buffers at once. Flush (the end of the loop turn) publishes the
// used entries and interrupts the guest once for the whole batch.

package vhostuser

import (
	"encoding/binary"

	"gopasst/datapath/tap"
)

// Theory of operation
//
// Direct views. A producer needs a contiguous buffer of MaxFrame bytes
// (Out's contract), and a guest posts buffers of a page or two: a view
// into guest memory exists only where single-buffer chains lie end to end
// in one region, vnetLen + MaxFrame bytes in all (a test peer that lays
// its buffers out in order does; a Linux guest does within a page
// fragment), or one chain is that large. Reserve then takes such chains
// for the slot (a "run") and hands out run[vnetLen:]; Commit(n) writes the
// header in front and gives used entries to the chains the frame covers
// (the last one partly); the rest go back to the pool. Anything else goes
// through staging: our own MaxFrame buffers, whose Commit copies the frame
// into chains taken then. After directMisses runs not found in a row, the
// next directBackoff reservations are staged without looking, so that a
// guest whose buffers never line up does not pay for the search on every
// frame.
//
// The pool. Chains popped from the avail ring and not used yet (looked
// at for a run, the tail of a run, taken for a frame that was then
// dropped) wait in the pool, sorted by where their buffer lies in guest
// memory, so that a run is found whatever order the guest posted them in
// (a driver refills in the order we used them, which the runs themselves
// shuffle). Staged frames take from the pool first. Used entries may come
// in any order, so holding chains is legal. At Flush, uncommitted runs go
// back to the pool, which the next frames use first. Before a control
// message that touches the RX ring or the memory, whatever is held is
// given back: if the pool holds exactly the last chains popped, the avail
// index simply moves back over them (popping writes nothing to guest
// memory), else they are returned used with nothing written (a driver
// drops such entries), so that GET_VRING_BASE reports a clean index and
// nothing outlives a remap. (Moving the index back at every Flush too,
// while the driver posts concurrently, made the other helper's test
// front end see a buffer come back twice under load, cause not found:
// not done.)
//
// Chains per frame. With MRG_RXBUF a frame takes chains until its header
// and bytes fit, each chain one used entry with the bytes written to it,
// and num_buffers in the first header says how many; without, one chain
// must hold it all, or the frame is dropped (its chain kept as a spare).
// The header must fit in the first buffer of the first chain, as every
// driver lays it out (the C original assumes more).
//
// Backpressure. Reserve estimates how many largest frames the posted
// buffers hold (rxFit: chains available times the size of the last chain
// seen, over the largest frame) and gives no more; when they hold none it
// refuses, asks for RX kicks (publishing first, so that the guest has
// what it needs to refill) and, when a kick comes with enough buffers,
// Ready reports EventWritable. Giving "one while any is posted" instead
// would hand TCP a 64 KiB buffer for one 4 KiB chain, again and again:
// each frame dropped, the window spent on nothing. A frame that still finds no room at Commit is dropped and
// counted, as a full tap queue drops.
//
// Offloads. Offloads says Csum and TSO whatever the front end negotiates
// (it cannot change while the engine runs, and is asked before any front
// end connects); a frame using one the guest did not ack is completed here
// (checksum, then software segmentation into MSS-sized frames, gso.go), so
// that the guest only ever sees what it agreed to.

const (
	// maxRun is the most chains one direct view spans: 64 chains of at
	// least 1 KiB each for a largest frame.
	maxRun = 64
	// directMisses runs not found in a row make the next directBackoff
	// reservations go through staging without looking.
	directMisses  = 8
	directBackoff = 256
	// poolMax is the most chains the pool holds while looking for a run.
	poolMax = 2 * maxRun
)

// rxSlot is one buffer a producer fills: staging, or a direct view over
// a run of chains.
type rxSlot struct {
	stage  []byte // MaxFrame bytes of our own
	direct bool   // view is a run of guest buffers
	view   []byte // run[vnetLen : vnetLen+MaxFrame]
	hdr    []byte // run[:vnetLen]
	nch    int
	ents   [maxRun]poolEnt // the run's chains, in address order
}

// rxState is the RX side of the Backend.
type rxState struct {
	slots   []rxSlot
	cur     int  // first uncommitted slot
	refused bool // Reserve refused for want of buffers: EventWritable due at the next kick with buffers
	lastCap int  // bytes of the last chain popped: the estimate of a chain's size
	backoff int  // reservations left before looking for a run again
	misses  int  // runs not found in a row
	c       chain
	ents    [maxQueueSize]poolEnt // chains of the frame being written
	lens    [maxQueueSize]uint32  // and the bytes written to each
	pool    [maxQueueSize]poolEnt // pool[:poolN]: chains popped and not used, in address order
	poolN   int
	seg     []byte // software segmentation output (gso.go)
}

// init allocates the staging buffers.
func (s *rxState) init(queueLen int) {
	queueLen = max(queueLen, 1)
	mem := make([]byte, queueLen*tap.MaxFrame)
	s.slots = make([]rxSlot, queueLen)
	for i := range s.slots {
		s.slots[i].stage = mem[i*tap.MaxFrame : (i+1)*tap.MaxFrame : (i+1)*tap.MaxFrame]
	}
	s.seg = make([]byte, tap.MaxFrame)
}

// buf returns what slot i hands out.
func (s *rxSlot) buf() []byte {
	if s.direct {
		return s.view
	}
	return s.stage
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

// Frame implements tap.Out: the first uncommitted buffer (a staging
// buffer, unless a reserved run is still uncommitted there), MaxFrame
// bytes.
func (b *Backend) Frame() []byte { return b.rx.slots[b.rx.cur].buf() }

// rxFit estimates how many largest frames the chains the guest has
// posted hold: chains available (posted and held) times the size of the
// last chain seen, over the largest frame with its header. A guest whose
// whole ring holds less than one such frame (a small ring of small
// buffers) gets one frame at a time once at least half its ring is
// posted: a frame that big cannot reach it, a smaller one can. Without
// mergeable buffers every chain is one frame.
func (b *Backend) rxFit() int {
	r := &b.vq[rxQ]
	p := r.pending() + b.rx.poolN
	if b.acked&fNetMrgRxbuf == 0 || b.rx.lastCap == 0 {
		return p
	}
	fit := p * b.rx.lastCap / (b.vnetLen + tap.MaxFrame)
	if fit == 0 && p > 0 && 2*p >= int(r.num) {
		fit = 1
	}
	return fit
}

// Reserve implements tap.Out: the next buffers, direct views where the
// guest's buffers allow, as many as asked and as the guest's posted
// buffers are estimated to hold (rxFit); none while they hold none, and
// EventWritable follows when the guest has posted enough.
// With no guest rings in service it gives staging buffers, and their
// frames are dropped at Commit, as frames towards an absent guest are.
func (b *Backend) Reserve(bufs [][]byte) int {
	s := &b.rx
	n := min(len(bufs), len(s.slots))
	up := b.rxUp()
	if up {
		fit := b.rxFit()
		if fit == 0 {
			// Publish what is done, so that the guest can take it
			// and refill, and ask to hear when it did; look again
			// once asked, as it may have refilled meanwhile.
			b.flushRX()
			s.refused = true
			b.vq[rxQ].wantKicks(true)
			if fit = b.rxFit(); fit == 0 {
				b.Stats.Starved++
				return 0
			}
		}
		n = min(n, fit)
	}
	for i := 0; i < n; i++ {
		sl := &s.slots[(s.cur+i)%len(s.slots)]
		if up && !sl.direct && b.pcap == nil {
			switch {
			case s.backoff > 0:
				s.backoff--
			case b.takeRun(sl):
				s.misses = 0
			default:
				// One miss is usually a hole left by the frame
				// before, which the next staged frame fills;
				// many in a row, a guest whose buffers never
				// line up.
				s.misses++
				if s.misses >= directMisses {
					s.backoff = directBackoff
				}
			}
		}
		bufs[i] = sl.buf()
	}
	return n
}

// Commit implements tap.Out: the frame in the next uncommitted buffer, n
// bytes, complete, goes to the guest now.
func (b *Backend) Commit(n int) { b.commit(n, nil) }

// CommitOffload implements tap.Out: Commit for a frame with the offloads
// h describes, carried to the guest in its virtio-net header, or done here
// if the guest did not negotiate them.
func (b *Backend) CommitOffload(n int, h *tap.VnetHdr) { b.commit(n, h) }

// commit sends the next uncommitted slot's frame, n bytes, offloads h.
func (b *Backend) commit(n int, h *tap.VnetHdr) {
	s := &b.rx
	sl := &s.slots[s.cur]
	s.cur = (s.cur + 1) % len(s.slots)
	if !sl.direct {
		b.deliver(sl.stage[:n], h)
		return
	}
	f := sl.view[:n]
	if !b.rxUp() {
		b.releaseRun(sl)
		b.Stats.DroppedOut++
		return
	}
	if h != nil && h.GSOType != tap.GSONone && !b.guestGSO(h.GSOType) {
		// Segments go to other chains, maybe these: out of the run
		// first.
		copy(sl.stage, f)
		b.releaseRun(sl)
		b.deliver(sl.stage[:n], h)
		return
	}
	if b.pcap != nil {
		b.pcap.Write(f)
	}
	if h != nil && h.Flags&tap.VnetNeedsCsum != 0 && b.acked&fNetGuestCsum == 0 {
		if !completeCsum(f, h) {
			b.releaseRun(sl)
			b.dropBadOffload()
			return
		}
		b.Stats.SoftCsum++
		h = nil
	}
	// The chains the frame covers, the last one partly.
	r := &b.vq[rxQ]
	total := b.vnetLen + n
	k := 0
	for left := total; left > 0; k++ {
		l := min(left, int(sl.ents[k].l))
		r.push(sl.ents[k].head, uint32(l))
		left -= l
	}
	b.writeHdr(sl.hdr, h, k)
	for i := k; i < sl.nch; i++ {
		b.poolPut(sl.ents[i])
	}
	sl.nch, sl.direct, sl.view, sl.hdr = 0, false, nil, nil
	b.Stats.DirectOut++
	b.sent(n, k)
}

// writeHdr writes the virtio-net header for a frame with offloads h (nil:
// none) over nbuf chains into hdr (vnetLen bytes).
func (b *Backend) writeHdr(hdr []byte, h *tap.VnetHdr, nbuf int) {
	var vh [12]byte
	if h != nil {
		h.Encode(vh[:])
	}
	if b.vnetLen == 12 {
		binary.LittleEndian.PutUint16(vh[10:], uint16(nbuf))
	}
	copy(hdr, vh[:b.vnetLen])
}

// sent counts a frame of n bytes over nbuf chains.
func (b *Backend) sent(n, nbuf int) {
	b.Stats.FramesOut++
	b.Stats.BytesOut += uint64(n)
	if nbuf > 1 {
		b.Stats.MergedFrames++
		if uint64(nbuf) > b.Stats.MaxBuffersPerFrame {
			b.Stats.MaxBuffersPerFrame = uint64(nbuf)
		}
	}
}

// Flush implements tap.Out: the used entries of the frames committed, and
// of the guest's frames read since the last Read, are published, with one
// interrupt per ring if the guest wants it. Runs reserved and not
// committed go back to the pool, for the next frames.
func (b *Backend) Flush() {
	s := &b.rx
	for i := range s.slots {
		if s.slots[i].direct {
			b.releaseRun(&s.slots[i])
		}
	}
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
// and the buffers now hold a frame (rxFit), kicks are suppressed again and
// producers may go on (EventWritable); else the next post kicks again.
func (b *Backend) rxKicked() tap.Event {
	if !b.rx.refused || !b.rxUp() {
		return 0
	}
	if b.rxFit() == 0 {
		// Not enough yet: the next addition kicks again.
		b.vq[rxQ].wantKicks(true)
		if b.rxFit() == 0 {
			return 0
		}
	}
	b.rx.refused = false
	b.vq[rxQ].wantKicks(false)
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
	off := 0 // bytes of header and frame placed
	for off < total {
		e, res, ok := b.takeChain(c)
		if !ok {
			b.rxNoRoom(nbuf, r.bad)
			return
		}
		if res == popBad {
			b.badChain(rxQ, c)
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
		s.ents[nbuf], s.lens[nbuf] = e, uint32(w)
		nbuf++
		if off < total && !mrg {
			b.logOnce(logTooBig, "vhost-user: frame larger than the guest's receive buffer (no mergeable buffers): dropped (logged once)")
			b.rxNoRoom(nbuf, true)
			return
		}
	}
	b.writeHdr(hdr, h, nbuf)
	for i := 0; i < nbuf; i++ {
		r.push(s.ents[i].head, s.lens[i])
	}
	b.sent(len(f), nbuf)
}

// rxNoRoom drops the frame being written, whose nbuf chains go back to
// the pool: the guest's buffers did not hold it. Unless quiet
// (the ring broke, or one chain was too short without mergeable
// buffers), there were none left: kicks are asked for, so that producers
// hear when there are.
func (b *Backend) rxNoRoom(nbuf int, quiet bool) {
	s := &b.rx
	for i := 0; i < nbuf; i++ {
		b.poolPut(s.ents[i])
	}
	b.Stats.DroppedOut++
	b.Stats.NoRoom++
	if quiet {
		return
	}
	s.refused = true
	b.vq[rxQ].wantKicks(true)
}
