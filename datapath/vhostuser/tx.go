// Frames from the guest (the TX ring, queue 1): tap.Backend's Read. Each
// chain is a virtio-net header and one frame, copied out of guest memory
// into a private arena, packed, and handed out from there. The copy is
// what makes the frame the guest's no more: the demultiplexer validates
// headers once and the protocols read them again later, and a guest
// changing its buffer in between (another vCPU) must not make a checked
// length unchecked; it also joins the pieces a guest scatters a frame in
// (a Linux guest does for segmentation offload super-frames: headers, then
// page fragments). The chains are given back to the guest (used entries,
// one interrupt) at the next Read, at the end of the loop turn (Flush),
// and before any control message.
//
// Split frames. Copying a 64 KiB TCP segment was a quarter of passt's CPU
// guest to host (perf, iperf3 through test/vhostpeer: runtime.memmove
// under Read 26 % of the samples, the kernel's copy into the socket 19 %).
// Only headers need to be private: the payload is the guest's data, which
// it may change as it likes, and no length is read from it. So a TCP
// segment with at least splitMin payload bytes lying in one guest buffer
// is copied only up to the end of its TCP header (found from the private
// copy, never from guest memory); its frame in the arena keeps its full
// length, but the payload bytes there are stale, and the TCP handler's
// write asks PayloadIovecs for the bytes of its payload slice: the guest's
// own buffer. Those views are valid until the next Read, Flush or control
// message, within the loop callback that read the frame (the TCP handler
// writes the payload before Demux.Batch returns). Other frames, and all
// of them with a capture (which records what the arena holds), are copied
// whole.

package vhostuser

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"

	"gopasst/datapath/tap"
)

// splitMin is the least TCP payload a frame must carry to be split (its
// payload left in guest memory): below it the copy costs less than the
// extra iovec and lookup.
const splitMin = 1024

// splitPeek is how many bytes of a frame are copied to find its headers:
// Ethernet, the longest IPv4 header and the longest TCP header.
const splitPeek = 14 + 60 + 60

// splitFrame is one frame of the last Read whose payload stayed in guest
// memory: arena[at:at+hl] holds its headers, tail the rest of the frame.
type splitFrame struct {
	at, hl int
	tail   []byte // a view of the guest's buffer
}

// txState is the TX side of the Backend.
type txState struct {
	heads    [tap.RxBatch]uint16 // chains read by the last Read, not given back yet
	pendingN int
	arena    []byte // the frames of one Read, packed: RxBatch largest frames, made at the first Read
	c        chain
	split    [tap.RxBatch]splitFrame // the split frames of the last Read, in arena order
	splitN   int
}

// init is here for symmetry with rxState: the arena is made at the first
// Read (its pages are touched only as frames fill them).
func (s *txState) init() {}

// complete gives back the chains of the last Read (used entries of length
// 0) and interrupts the guest if it wants it.
func (s *txState) complete(b *Backend) {
	s.dropViews()
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
		f := s.arena[at : at+fl : at+fl]
		if b.pcap != nil || fl < splitPeek+splitMin || !s.splitOut(b, c, at, f) {
			b.copyOut(c, fl, f)
		}
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

// dropViews forgets the split frames' views of guest memory.
func (s *txState) dropViews() {
	for i := 0; i < s.splitN; i++ {
		s.split[i].tail = nil
	}
	s.splitN = 0
}

// splitOut copies the headers of chain c's frame into d (the frame's
// place in the arena, at offset at) and records the rest as a view of
// guest memory, if the frame is a TCP segment with at least splitMin
// payload bytes in one guest buffer. The headers are located in the
// private copy only. Returns false, having recorded nothing, for any other
// frame (the caller copies it whole; the demultiplexer does the real
// validation).
func (s *txState) splitOut(b *Backend, c *chain, at int, d []byte) bool {
	fl := len(d)
	h := d[:splitPeek]
	b.copyRange(c, 0, h)
	l4 := 14
	switch binary.BigEndian.Uint16(h[12:]) {
	case 0x0800:
		if h[14]>>4 != 4 || h[14+9] != unix.IPPROTO_TCP {
			return false
		}
		l4 += int(h[14]&0xf) * 4
	case 0x86dd:
		if h[14]>>4 != 6 || h[14+6] != unix.IPPROTO_TCP {
			return false
		}
		l4 += 40
	default:
		return false
	}
	hl := l4 + int(h[l4+12]>>4)*4
	if hl > splitPeek || fl-hl < splitMin {
		return false
	}
	tail := b.frameBytes(c, hl, fl-hl)
	if tail == nil {
		return false
	}
	s.split[s.splitN] = splitFrame{at: at, hl: hl, tail: tail}
	s.splitN++
	b.Stats.Split++
	return true
}

// frameBytes returns frame bytes [off, off+n) of chain c (after the
// virtio-net header) as a view of guest memory, or nil if they do not lie
// in one buffer.
func (b *Backend) frameBytes(c *chain, off, n int) []byte {
	off += b.vnetLen
	for k := 0; k < c.n; k++ {
		seg := c.segs[k]
		if off >= len(seg) {
			off -= len(seg)
			continue
		}
		if len(seg)-off < n {
			return nil
		}
		return seg[off : off+n : off+n]
	}
	return nil
}

// PayloadIovecs implements tcp.PayloadSource: it fills iov (at least 2
// entries) with the pieces that hold p, a slice of a frame handed out by
// the last Read (the TCP payload the handler writes), and returns how many
// it used: p itself, or for a split frame the part in the copied headers
// (if any) and the part in the guest's buffer. A slice that is not
// wholly inside one frame of the arena is given as it is.
func (b *Backend) PayloadIovecs(p []byte, iov []unix.Iovec) int {
	s := &b.tx
	n := 0
	if s.splitN > 0 && len(p) > 0 {
		n = s.pieces(p, iov)
	}
	if n == 0 {
		iov[0].Base = unsafe.SliceData(p)
		iov[0].SetLen(len(p))
		n = 1
	}
	return n
}

// pieces is PayloadIovecs for a split frame: 0 if p is not in one.
func (s *txState) pieces(p []byte, iov []unix.Iovec) int {
	base := uintptr(unsafe.Pointer(unsafe.SliceData(s.arena)))
	off := uintptr(unsafe.Pointer(unsafe.SliceData(p))) - base
	if off >= uintptr(len(s.arena)) {
		return 0
	}
	// The last split frame that starts at or before p (binary search:
	// the frames are recorded in arena order).
	lo, hi := 0, s.splitN
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if s.split[m].at <= int(off) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == 0 {
		return 0
	}
	sp := &s.split[lo-1]
	o := int(off) - sp.at
	end := o + len(p)
	if end <= sp.hl || end > sp.hl+len(sp.tail) {
		return 0 // in the copied headers, or not in this frame
	}
	n := 0
	if o < sp.hl {
		iov[0].Base = unsafe.SliceData(p)
		iov[0].SetLen(sp.hl - o)
		n, o = 1, sp.hl
	}
	t := sp.tail[o-sp.hl : end-sp.hl]
	iov[n].Base = unsafe.SliceData(t)
	iov[n].SetLen(len(t))
	return n + 1
}

// copyRange copies frame bytes [off, off+len(d)) of chain c (after the
// virtio-net header) into d; the chain holds at least that many.
func (b *Backend) copyRange(c *chain, off int, d []byte) {
	skip := b.vnetLen + off
	got := 0
	for k := 0; k < c.n && got < len(d); k++ {
		seg := c.segs[k]
		if skip >= len(seg) {
			skip -= len(seg)
			continue
		}
		got += copy(d[got:], seg[skip:])
		skip = 0
	}
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
