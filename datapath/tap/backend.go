// Package tap holds the guest back ends, "tap" as the C original calls the
// guest side of every mode: the tap device of pasta now, the qemu stream
// socket and vhost-user rings of passt mode later, and the fake for tests
// in the sub-package taptest. The engine and every protocol see a back end
// only through the interfaces here: Backend for the engine, Out for the
// protocols and services, which only send frames.
//
// # Theory of operation
//
// Frames cross in batches both ways. Towards the guest, producers take
// buffers from the back end's preallocated queue (Frame, Reserve), write a
// frame straight into each (a TCP peek lands in the payload area, headers
// go in front) and commit it; the engine flushes the queue once per loop
// turn, or the back end does when the queue is full. From the guest, the
// engine asks Read for a batch of frames whenever Ready says there are
// some, and gets views: where the frames are (the back end's own receive
// pool, a stream socket's reassembly buffer, guest memory) is the back
// end's business, and a view stays valid only until the next Read. Nothing
// in either direction allocates after start-up.
//
// Offloads (checksums left partial, segmentation) are what a back end can
// carry towards the guest beside complete frames; a producer asks Offloads
// once and uses CommitOffload only for what it allows.
package tap

// MaxFrame is the largest frame any back end carries: 65535 bytes of IP
// packet plus the Ethernet header. With segmentation offload this is also
// the largest TCP or UDP super-frame either way (a tap's gso_max_size is
// 64 KiB).
const MaxFrame = 65535 + 14

// Out queues Ethernet frames towards the guest. A producer asks for a
// buffer, fills it and commits it; frames are written in batches, at the
// end of the loop turn (Flush) or earlier when the queue is full. No method
// allocates. Not safe for concurrent use: everything runs on the loop's
// thread.
type Out interface {
	// Frame returns the buffer for the next frame towards the guest,
	// starting at the Ethernet header, with len == cap == the largest frame
	// the back end carries (at most MaxFrame). When the queue is full it is
	// flushed first. The buffer stays valid until the next Flush.
	Frame() []byte
	// Reserve fills bufs with the buffers of the next len(bufs) frames
	// (flushing the queue first if fewer slots are free), for producers
	// that fill many frames with one call, e.g. recvmmsg or one TCP peek
	// spread over several frames. It returns how many buffers it filled:
	// len(bufs), or fewer: the queue's length, or, where the guest side
	// applies backpressure (a stream socket that is full), what is left,
	// possibly 0. A producer given fewer than it asked for stops and
	// keeps its data; the back end reports EventWritable when it may go
	// on. They are committed in order with Commit or CommitOffload, the
	// first one first; Frame returns the first uncommitted one.
	Reserve(bufs [][]byte) int
	// Commit queues the first n bytes of the next uncommitted buffer (the
	// one Frame returned, or the first reserved one not committed yet) as
	// a complete frame: checksums filled in, one segment. A buffer that is
	// not committed is simply reused.
	Commit(n int)
	// CommitOffload is Commit for a frame that uses offloads, described by
	// the virtio-net header h (copied): a partial checksum (Flags
	// VnetNeedsCsum) and, for a super-frame, its segmentation (GSOType,
	// GSOSize). Preconditions: Offloads allows what h asks for.
	CommitOffload(n int, h *VnetHdr)
	// Offloads returns what frames towards the guest may carry besides
	// complete frames. It does not change while the back end runs.
	Offloads() Offloads
	// Flush writes every queued frame to the guest now. A frame the guest
	// side cannot take (its queue is full) is dropped and counted, as on
	// a lossy link: TCP recovers it by retransmission.
	Flush()
}

// Offloads is what frames towards the guest may carry besides complete
// frames. The zero value: nothing, every frame complete.
type Offloads struct {
	// Csum: transport checksums may be left partial (VnetNeedsCsum), the
	// checksum field holding the pseudo-header sum; the guest's kernel
	// trusts that on local delivery and completes it if it forwards.
	Csum bool
	// TSO: a TCP frame may carry many segments of the guest's MSS
	// (GSOTCPv4, GSOTCPv6), up to MaxFrame. Implies Csum.
	TSO bool
	// USO: a UDP frame may carry many datagrams of one size (GSOUDPL4).
	// Implies Csum.
	USO bool
}

// Event is what Backend.Ready reports about the guest side.
type Event uint8

const (
	// EventFrames: frames from the guest are queued. The engine calls
	// Read until it returns fewer frames than asked for.
	EventFrames Event = 1 << iota
	// EventUp: a guest connected (passt: a new qemu on the socket): what
	// was learned about the previous one no longer holds, and the engine
	// announces itself again.
	EventUp
	// EventDown: the guest went away, and a new one may come (EventUp);
	// frames towards it are dropped meanwhile.
	EventDown
	// EventWritable: the back end refused buffers (Reserve gave fewer
	// than asked) because the guest side was not taking frames, and now
	// takes them again: the engine lets the producers that stopped go on.
	EventWritable
)

// Watcher is what a back end needs of the event loop: watching its
// descriptors. The engine implements it over the loop.
type Watcher interface {
	// Watch adds fd to the loop with the epoll events mask; events on it
	// come back to Backend.Ready with idx, the back end's own number for
	// the descriptor. Watching a watched fd again changes its mask.
	Watch(fd int, events uint32, idx uint32) error
	// Unwatch removes fd from the loop (closing it does too).
	Unwatch(fd int)
}

// Backend is a guest back end, batch-first in the style of wireguard-go's
// tun.Device: the engine reads frames from the guest with Read, when Ready
// reports some, and every producer sends frames through its Out methods.
// Not safe for concurrent use: everything runs on the loop's thread.
type Backend interface {
	Out

	// Read returns the frames the guest has queued, at most len(frames):
	// it sets frames[0:n] to views of whole Ethernet frames, without any
	// header of the back end's own. The views stay valid until the next
	// call of Read or Close, whatever else is called in between; a caller
	// that needs a frame longer copies it. n < len(frames) means no more
	// frames are queued for now; a frame that is malformed at the back
	// end's level (bad length, bad header) is dropped and counted, not
	// returned. err is not nil only when the guest side failed for good
	// (the tap was removed, the socket broke): the datapath stops.
	Read(frames [][]byte) (n int, err error)
	// Watch registers the back end's descriptors with w. The engine calls
	// it once, before the loop runs; a back end whose descriptors change
	// (passt: a listening socket, then a client's) keeps w.
	Watch(w Watcher) error
	// Ready handles the epoll events of the descriptor registered with
	// idx and reports what happened; err ends the datapath, as for Read.
	Ready(idx uint32, events uint32) (Event, error)
	// Close releases the back end's descriptors.
	Close() error
}
