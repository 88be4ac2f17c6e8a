// Frames from the guest (the TX ring, queue 1): tap.Backend's Read. Each
// chain is a virtio-net header and one frame, copied out of guest memory
// into a private arena, packed, and handed out from there. The copy is
// what makes the frame the guest's no more: the demultiplexer validates
// headers once and the protocols read them again later, and a guest
// changing its buffer in between (another vCPU) must not make a checked
// length unchecked; it also joins the pieces a guest scatters a frame in
// (a Linux guest does for segmentation offload super-frames: headers, then
// page fragments). It costs one memcpy per frame, where the stream socket
// costs a kernel copy in and one out. The chains are given back to the
// guest (used entries, one interrupt) at the next Read, at the end of the
// loop turn (Flush), and before any control message.

package vhostuser

import (
	"gopasst/datapath/tap"
)

// txState is the TX side of the Backend.
type txState struct {
	heads    [tap.RxBatch]uint16 // chains read by the last Read, not given back yet
	pendingN int
	arena    []byte // the frames of one Read, packed: RxBatch largest frames, made at the first Read
	c        chain
}

// init is here for symmetry with rxState: the arena is made at the first
// Read (its pages are touched only as frames fill them).
func (s *txState) init() {}

// complete gives back the chains of the last Read (used entries of length
// 0) and interrupts the guest if it wants it.
func (s *txState) complete(b *Backend) {
	if s.pendingN == 0 {
		return
	}
	r := &b.vq[txQ]
	if r.used == nil {
		s.pendingN = 0
		return
	}
	for i := 0; i < s.pendingN; i++ {
		r.push(s.heads[i], 0)
	}
	s.pendingN = 0
	if r.publish() {
		b.signal(txQ)
	}
}

// Read implements tap.Backend: the frames of the chains the guest made
// available, at most len(frames) (and tap.RxBatch), as views of our
// copies valid until the next Read. When the ring is empty it asks for kicks again and looks
// once more, so that a frame added meanwhile is not left without a kick.
// A chain whose frame is shorter than an Ethernet header or longer than
// MaxFrame is dropped and counted; a bad chain too (logged once). err is
// always nil: a guest's errors are not the datapath's.
func (b *Backend) Read(frames [][]byte) (int, error) {
	s := &b.tx
	s.complete(b)
	r := &b.vq[txQ]
	if b.conn < 0 || !r.ready() || !r.enabled {
		return 0, nil
	}
	want := min(len(frames), tap.RxBatch)
	n := 0
	c := &s.c
	if s.arena == nil {
		s.arena = make([]byte, tap.RxBatch*tap.MaxFrame)
	}
	at := 0 // arena bytes used
	for n < want {
		switch r.pop(&b.mem, c, false) {
		case popEmpty:
			// Ask for a kick at the index as it stands now, then
			// look once more: what the guest added before it saw
			// the request would get no kick. Each time the ring
			// runs empty, not only the first: avail_event set once
			// and then overtaken by the frames read after it would
			// leave the guest kicking for an index it has passed.
			r.wantKicks(true)
			if r.pending() == 0 {
				return n, nil
			}
			continue
		case popBroken:
			b.brokenRing(txQ)
			return n, nil
		case popBad:
			b.badChain(txQ, c)
			continue
		}
		fl := c.bytes - b.vnetLen
		if fl < tap.StreamMinFrame || fl > tap.MaxFrame {
			b.Stats.BadIn++
			b.logOnce(logBadFrame, "vhost-user: guest frame of %d bytes dropped (logged once)", fl)
			r.push(c.head, 0)
			continue
		}
		s.heads[s.pendingN] = c.head
		s.pendingN++
		f := b.copyOut(c, fl, s.arena[at:at+fl:at+fl])
		at += fl
		frames[n] = f
		n++
		b.Stats.FramesIn++
		b.Stats.BytesIn += uint64(fl)
		if b.pcap != nil {
			b.pcap.Write(f)
		}
	}
	return n, nil
}

// copyOut copies the fl frame bytes of chain c, after the virtio-net
// header, into d (fl bytes) and returns it.
func (b *Backend) copyOut(c *chain, fl int, d []byte) []byte {
	skip := b.vnetLen
	off := 0
	pieces := 0
	for k := 0; k < c.n && off < fl; k++ {
		seg := c.segs[k]
		if skip >= len(seg) {
			skip -= len(seg)
			continue
		}
		off += copy(d[off:], seg[skip:])
		skip = 0
		pieces++
	}
	if pieces > 1 {
		b.Stats.Linearized++
	}
	return d
}
