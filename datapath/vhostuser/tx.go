// Frames from the guest (the TX ring, queue 1): tap.Backend's Read. Each
// chain is a virtio-net header and one frame; the frame is handed out in
// place in guest memory when it lies in one buffer, copied out into a
// private buffer when the guest scattered it over several (a Linux guest
// does for segmentation offload super-frames: headers, then page
// fragments). The chains are given back to the guest (used entries, one
// interrupt) once the engine is done with the views: at the next Read, at
// the end of the loop turn (Flush), and before any control message.

package vhostuser

import (
	"gopasst/datapath/tap"
)

// txState is the TX side of the Backend.
type txState struct {
	heads    [tap.RxBatch]uint16 // chains handed out by the last Read, not given back yet
	pendingN int
	lin      [tap.RxBatch][]byte // private copies of scattered frames, made at first need
	c        chain
}

// init is here for symmetry with rxState: the copies are allocated at
// first need, a guest that never scatters a frame never pays for them.
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
// available, at most len(frames) (and tap.RxBatch), as views valid until
// the next Read. When the ring is empty it asks for kicks again and looks
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
	rearmed := false
	c := &s.c
	for n < want {
		switch r.pop(&b.mem, c, false) {
		case popEmpty:
			if rearmed {
				return n, nil
			}
			r.wantKicks(true)
			rearmed = true
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
		f := b.frameView(c, fl, n)
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

// frameView returns the fl frame bytes of chain c after the virtio-net
// header: in place if they lie in one buffer, else copied into private
// buffer i.
func (b *Backend) frameView(c *chain, fl, i int) []byte {
	skip := b.vnetLen
	k := 0
	for ; k < c.n && skip >= len(c.segs[k]); k++ {
		skip -= len(c.segs[k])
	}
	if k < c.n && len(c.segs[k])-skip >= fl {
		return c.segs[k][skip : skip+fl : skip+fl]
	}
	s := &b.tx
	if s.lin[i] == nil {
		s.lin[i] = make([]byte, tap.MaxFrame)
	}
	d := s.lin[i][:fl]
	off := 0
	for ; k < c.n && off < fl; k++ {
		off += copy(d[off:], c.segs[k][skip:])
		skip = 0
	}
	b.Stats.Linearized++
	return d
}
