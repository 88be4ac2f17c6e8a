// Package taptest fakes the guest side for the tests of the engine, the
// protocols and the services: Backend is a complete tap.Backend in memory
// (frames towards the guest recorded, frames from the guest injected, the
// offloads a test chooses), Tap wraps a real back end to watch what crosses
// it, and the builders make frames as a guest sends them (or as the guest
// must receive them), so that upper layers are tested without a tap device
// or a qemu socket, as wireguard-go's tun/tuntest does for its device.
package taptest

import (
	"golang.org/x/sys/unix"

	"gopasst/datapath/tap"
)

// Backend is a tap.Backend over a queue of a fixed number of frame buffers
// of tap.MaxFrame bytes towards the guest, like the real back ends, and a
// queue of injected frames from the guest.
//
// Towards the guest it counts the frames committed and their bytes and, if
// Keep is set, keeps a copy of each with its virtio-net header (the zero
// header for Commit). A full queue is flushed by Frame and Reserve as the
// real back ends do; Flush only empties the queue (nothing is written
// anywhere). Until then the queued frames can be looked at in place
// (Queued, QueuedFrame, QueuedHdr).
//
// From the guest, Inject queues frames (copied) and makes the back end
// readable: once watched, through an eventfd in the event loop, so that an
// engine reads them as it reads a tap.
//
// With Keep off, no method but Inject allocates after New: allocation
// tests use that.
type Backend struct {
	// Keep makes Commit and CommitOffload copy every committed frame for
	// Frames, Hdrs and Last. The copies allocate: turn it off around
	// testing.AllocsPerRun.
	Keep bool

	offloads tap.Offloads
	slots    [][]byte      // the queue's buffers, tap.MaxFrame bytes each
	lens     []int         // lengths of the queued frames
	hdrs     []tap.VnetHdr // headers of the queued frames
	queued   int           // buffers committed since the last flush
	frames   [][]byte      // copies of the committed frames, if Keep
	kept     []tap.VnetHdr // their headers
	count    int           // frames committed since New or Reset
	bytes    int           // their total length
	flushes  int           // calls of Flush, explicit or on a full queue

	room     int  // with limited: slots Reserve may still hand out
	limited  bool // SetRoom in effect: backpressure, as a full stream socket applies
	writable bool // Writable was called: the next Ready reports EventWritable

	in     [][]byte // injected frames not read yet
	rx     [][]byte // the frames the last Read returned (their views)
	efd    int      // eventfd signalled by Inject once watched, -1 before
	closed bool
}

var _ tap.Backend = (*Backend)(nil)

// New returns a Backend that keeps copies of the committed frames.
//
// slots: how many frames the queue holds before it flushes itself (at
// least 1). Returns the Backend, without offloads.
func New(slots int) *Backend {
	b := &Backend{Keep: true, efd: -1, lens: make([]int, slots), hdrs: make([]tap.VnetHdr, slots)}
	mem := make([]byte, slots*tap.MaxFrame)
	for i := 0; i < slots; i++ {
		b.slots = append(b.slots, mem[i*tap.MaxFrame:(i+1)*tap.MaxFrame:(i+1)*tap.MaxFrame])
	}
	return b
}

// NewCounter returns a Backend that only counts the committed frames and
// their bytes, and allocates nothing once built.
//
// slots: as for New. Returns the Backend.
func NewCounter(slots int) *Backend {
	b := New(slots)
	b.Keep = false
	return b
}

// SetOffloads sets what Offloads reports: what producers may use towards
// the guest.
func (b *Backend) SetOffloads(o tap.Offloads) { b.offloads = o }

// Offloads implements tap.Out.
func (b *Backend) Offloads() tap.Offloads { return b.offloads }

// Frame implements tap.Out: the next free buffer, flushing the queue first
// if it is full.
func (b *Backend) Frame() []byte {
	if b.queued == len(b.slots) {
		b.Flush()
	}
	return b.slots[b.queued]
}

// SetRoom makes the back end apply backpressure, as a full stream socket
// does: Reserve hands out at most n more buffers (then none) until
// Writable. Frame is not limited (control frames).
func (b *Backend) SetRoom(n int) { b.room, b.limited = n, true }

// Writable lifts SetRoom's limit and makes the next Ready report
// tap.EventWritable (signalling the loop if watched).
func (b *Backend) Writable() {
	b.limited, b.writable = false, true
	if b.efd >= 0 {
		one := [8]byte{1}
		unix.Write(b.efd, one[:])
	}
}

// Reserve implements tap.Out (see SetRoom for backpressure).
func (b *Backend) Reserve(bufs [][]byte) int {
	if len(b.slots)-b.queued < len(bufs) {
		b.Flush()
	}
	k := min(len(bufs), len(b.slots)-b.queued)
	if b.limited {
		k = min(k, b.room)
		b.room -= k
	}
	for i := 0; i < k; i++ {
		bufs[i] = b.slots[b.queued+i]
	}
	return k
}

// Commit implements tap.Out: it queues the first n bytes of the next free
// buffer, counts them, and keeps a copy if Keep is set.
func (b *Backend) Commit(n int) { b.commit(n, tap.VnetHdr{}) }

// CommitOffload implements tap.Out as Commit does, recording h. A header
// that asks for more than SetOffloads allowed is a caller's bug: it panics,
// so that the test fails where the bug is.
func (b *Backend) CommitOffload(n int, h *tap.VnetHdr) {
	o := b.offloads
	switch {
	case !o.Csum && !o.TSO && !o.USO:
		panic("taptest: CommitOffload without offloads")
	case (h.GSOType == tap.GSOTCPv4 || h.GSOType == tap.GSOTCPv6) && !o.TSO,
		h.GSOType == tap.GSOUDPL4 && !o.USO:
		panic("taptest: CommitOffload with a segmentation the back end does not take")
	}
	b.commit(n, *h)
}

// commit queues a frame of n bytes with header h.
func (b *Backend) commit(n int, h tap.VnetHdr) {
	if b.Keep {
		b.frames = append(b.frames, append([]byte(nil), b.slots[b.queued][:n]...))
		b.kept = append(b.kept, h)
	}
	b.lens[b.queued] = n
	b.hdrs[b.queued] = h
	b.queued++
	b.count++
	b.bytes += n
}

// Flush implements tap.Out: it empties the queue.
func (b *Backend) Flush() {
	b.queued = 0
	b.flushes++
}

// Queued returns how many frames were committed since the last flush.
func (b *Backend) Queued() int { return b.queued }

// QueuedFrame returns queued frame i, in place (valid until the buffer is
// reused after a flush). Preconditions: i < Queued().
func (b *Backend) QueuedFrame(i int) []byte { return b.slots[i][:b.lens[i]] }

// QueuedHdr returns the virtio-net header queued frame i was committed
// with (the zero header for Commit). Preconditions: i < Queued().
func (b *Backend) QueuedHdr(i int) tap.VnetHdr { return b.hdrs[i] }

// Frames returns the copies of the frames committed since New or Reset, in
// order (none unless Keep was set).
func (b *Backend) Frames() [][]byte { return b.frames }

// Hdrs returns the virtio-net headers of the frames Frames returns.
func (b *Backend) Hdrs() []tap.VnetHdr { return b.kept }

// Last returns the copy of the last frame committed, or nil if none was
// kept.
func (b *Backend) Last() []byte {
	if len(b.frames) == 0 {
		return nil
	}
	return b.frames[len(b.frames)-1]
}

// Count returns how many frames were committed since New or Reset, kept or
// not.
func (b *Backend) Count() int { return b.count }

// Bytes returns the total length of the frames Count counts.
func (b *Backend) Bytes() int { return b.bytes }

// Flushes returns how many times the queue was flushed.
func (b *Backend) Flushes() int { return b.flushes }

// Reset forgets the committed frames, their count and bytes. Slices that
// Frames and Last returned before stay as they were.
func (b *Backend) Reset() {
	b.frames, b.kept, b.count, b.bytes = nil, nil, 0, 0
}

// Inject queues frames from the guest (copied) for Read, and signals the
// loop if the back end is watched.
func (b *Backend) Inject(frames ...[]byte) {
	for _, f := range frames {
		b.in = append(b.in, append([]byte(nil), f...))
	}
	if b.efd >= 0 && len(frames) > 0 {
		one := [8]byte{1}
		unix.Write(b.efd, one[:])
	}
}

// Pending returns how many injected frames have not been read.
func (b *Backend) Pending() int { return len(b.in) }

// Read implements tap.Backend: the injected frames, oldest first, as views
// that stay valid until the next Read.
func (b *Backend) Read(frames [][]byte) (int, error) {
	clear(b.rx) // the previous views end here
	n := min(len(frames), len(b.in))
	b.rx = append(b.rx[:0], b.in[:n]...)
	copy(frames, b.rx)
	b.in = b.in[n:]
	if len(b.in) == 0 {
		b.in = nil
	}
	return n, nil
}

// Watch implements tap.Backend: an eventfd stands for the guest's
// descriptor, readable while injected frames wait.
func (b *Backend) Watch(w tap.Watcher) error {
	if b.efd < 0 {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			return err
		}
		b.efd = fd
	}
	if len(b.in) > 0 {
		one := [8]byte{1}
		unix.Write(b.efd, one[:])
	}
	return w.Watch(b.efd, unix.EPOLLIN, 0)
}

// Ready implements tap.Backend: it clears the eventfd and reports frames
// if any wait, and EventWritable after Writable.
func (b *Backend) Ready(idx uint32, events uint32) (tap.Event, error) {
	var buf [8]byte
	unix.Read(b.efd, buf[:])
	var ev tap.Event
	if b.writable {
		b.writable = false
		ev |= tap.EventWritable
	}
	if len(b.in) > 0 {
		ev |= tap.EventFrames
	}
	return ev, nil
}

// Close implements tap.Backend.
func (b *Backend) Close() error {
	if b.efd >= 0 && !b.closed {
		b.closed = true
		return unix.Close(b.efd)
	}
	return nil
}
