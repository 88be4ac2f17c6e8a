// Package tap holds the guest-side back ends: the tap device of pasta mode
// now, the qemu stream socket of passt mode later; the fake for unit tests
// is its sub-package taptest. Each moves
// Ethernet frames in batches; the protocols see only the Out interface for
// frames towards the guest and receive frames from the guest as byte slices.
package tap

// Out queues Ethernet frames towards the guest. Frames are written in
// batches: a protocol asks for a buffer, fills it, commits it, and the event
// loop flushes everything queued once per turn (or earlier when the queue is
// full). No call allocates.
type Out interface {
	// Frame returns the buffer for the next frame towards the guest,
	// starting at the Ethernet header, with len == cap == the largest frame
	// the back end can carry. The buffer stays valid until the next Flush.
	Frame() []byte
	// Commit queues the first n bytes of the buffer last returned by Frame.
	// A frame that is not committed is simply forgotten.
	Commit(n int)
	// Reserve fills bufs with the buffers of the next len(bufs) frames
	// (flushing the queue first if fewer slots are free), for producers that
	// read many frames at once, e.g. recvmmsg or one TCP read spread over
	// several frames. It returns how many buffers it filled. They are
	// committed in order with Commit, the first one first; Frame returns
	// the first uncommitted one.
	Reserve(bufs [][]byte) int
	// Flush writes every queued frame to the guest now.
	Flush()
}
