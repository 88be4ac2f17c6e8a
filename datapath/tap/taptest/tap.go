// Tap: a real back end with hooks on the frames that cross it, for tests
// that trace a translation (the TCP tests' frame traces).

package taptest

import "gopasst/datapath/tap"

// Tap wraps a tap.Backend and calls its hooks for every frame that crosses
// it: ToGuest for each frame committed towards the guest (with its
// virtio-net header, nil for Commit), FromGuest for each frame Read
// returns. Either hook may be nil. Everything else goes to the wrapped
// back end unchanged. The hooks see the frames in place: they must not
// keep them.
type Tap struct {
	tap.Backend
	ToGuest   func(frame []byte, h *tap.VnetHdr)
	FromGuest func(frame []byte)
	next      [1][]byte
}

// nextBuf returns the buffer the next Commit queues: by Out's contract the
// first uncommitted one, which is what a Reserve of one buffer returns
// (a slot for it is always free, since Frame or Reserve made it).
func (t *Tap) nextBuf() []byte {
	t.Backend.Reserve(t.next[:])
	return t.next[0]
}

// Commit implements tap.Out, calling ToGuest first.
func (t *Tap) Commit(n int) {
	if t.ToGuest != nil {
		t.ToGuest(t.nextBuf()[:n], nil)
	}
	t.Backend.Commit(n)
}

// CommitOffload implements tap.Out, calling ToGuest first.
func (t *Tap) CommitOffload(n int, h *tap.VnetHdr) {
	if t.ToGuest != nil {
		t.ToGuest(t.nextBuf()[:n], h)
	}
	t.Backend.CommitOffload(n, h)
}

// Read implements tap.Backend, calling FromGuest for each frame.
func (t *Tap) Read(frames [][]byte) (int, error) {
	n, err := t.Backend.Read(frames)
	if t.FromGuest != nil {
		for _, f := range frames[:n] {
			t.FromGuest(f)
		}
	}
	return n, err
}
