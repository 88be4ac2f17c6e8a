// Package taptest fakes the guest side of a back end for the tests of the
// protocols: Out records the frames a protocol queues towards the guest,
// and the builders make frames as a guest sends them (or as the guest must
// receive them), so that a protocol is tested without a tap device or a
// qemu socket (as wireguard-go's tun/tuntest does for its device).
package taptest

import "gopasst/datapath/tap"

// Out is a tap.Out over a queue of a fixed number of frame buffers of
// tap.MaxFrame bytes, like the real back ends. It counts the frames
// committed and their bytes and, if Keep is set, keeps a copy of each. A
// full queue is flushed by Frame and Reserve as the back ends do; Flush
// only empties the queue (nothing is written anywhere).
//
// With Keep off, no method allocates after New: allocation tests use that.
type Out struct {
	// Keep makes Commit copy every committed frame for Frames and Last.
	// The copies allocate: turn it off around testing.AllocsPerRun.
	Keep bool

	slots  [][]byte // the queue's buffers, tap.MaxFrame bytes each
	queued int      // buffers committed since the last flush
	frames [][]byte // copies of the committed frames, if Keep
	count  int      // frames committed since New or Reset
	bytes  int      // their total length
}

var _ tap.Out = (*Out)(nil)

// New returns an Out that keeps copies of the committed frames.
//
// slots: how many frames the queue holds before it flushes itself (at
// least 1). Returns the Out.
func New(slots int) *Out {
	o := &Out{Keep: true}
	mem := make([]byte, slots*tap.MaxFrame)
	for i := 0; i < slots; i++ {
		o.slots = append(o.slots, mem[i*tap.MaxFrame:(i+1)*tap.MaxFrame:(i+1)*tap.MaxFrame])
	}
	return o
}

// NewCounter returns an Out that only counts the committed frames and
// their bytes, and allocates nothing once built.
//
// slots: as for New. Returns the Out.
func NewCounter(slots int) *Out {
	o := New(slots)
	o.Keep = false
	return o
}

// Frame returns the next free buffer, flushing the queue first if it is
// full.
func (o *Out) Frame() []byte {
	if o.queued == len(o.slots) {
		o.Flush()
	}
	return o.slots[o.queued]
}

// Commit queues the first n bytes of the next free buffer: it counts
// them, and keeps a copy if Keep is set.
//
// n: the frame's length.
func (o *Out) Commit(n int) {
	if o.Keep {
		o.frames = append(o.frames, append([]byte(nil), o.slots[o.queued][:n]...))
	}
	o.queued++
	o.count++
	o.bytes += n
}

// Reserve fills bufs with the next free buffers, flushing the queue first
// if fewer than len(bufs) are free.
//
// bufs: slots to fill. Returns how many were filled: len(bufs), or the
// queue's length if that is smaller.
func (o *Out) Reserve(bufs [][]byte) int {
	if len(o.slots)-o.queued < len(bufs) {
		o.Flush()
	}
	k := min(len(bufs), len(o.slots)-o.queued)
	for i := 0; i < k; i++ {
		bufs[i] = o.slots[o.queued+i]
	}
	return k
}

// Flush empties the queue.
func (o *Out) Flush() { o.queued = 0 }

// Frames returns the copies of the frames committed since New or Reset, in
// order (none unless Keep was set).
func (o *Out) Frames() [][]byte { return o.frames }

// Last returns the copy of the last frame committed, or nil if none was
// kept.
func (o *Out) Last() []byte {
	if len(o.frames) == 0 {
		return nil
	}
	return o.frames[len(o.frames)-1]
}

// Count returns how many frames were committed since New or Reset, kept or
// not.
func (o *Out) Count() int { return o.count }

// Bytes returns the total length of the frames Count counts.
func (o *Out) Bytes() int { return o.bytes }

// Reset forgets the committed frames, their count and bytes. Slices that
// Frames and Last returned before stay as they were.
func (o *Out) Reset() {
	o.frames, o.count, o.bytes = nil, 0, 0
}
