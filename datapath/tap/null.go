// The null back end: pasta with --splice-only has no tap device and no
// guest link at all, only forwarded loopback connections, which never
// become frames. The engine still wants a back end; this one has no
// descriptor, never has frames to read and takes none.

package tap

// Null is a guest back end with no guest: Read returns nothing, and every
// frame is refused (Reserve gives no buffer) or, through Frame and Commit,
// written nowhere. Nothing should produce frames when it is used
// (nat.Target refuses every flow but the spliced ones with --splice-only);
// the ones that still are (a stray announcement) are counted in Dropped.
type Null struct {
	buf []byte
	// Dropped counts the frames committed and thrown away.
	Dropped uint64
}

// NewNull returns the null back end.
func NewNull() *Null { return &Null{buf: make([]byte, 1514)} }

// Frame implements Out: a scratch buffer, reused for every frame.
func (n *Null) Frame() []byte { return n.buf }

// Reserve implements Out: no room, ever, as a guest that never reads.
func (n *Null) Reserve(bufs [][]byte) int { return 0 }

// Commit implements Out: the frame is dropped.
func (n *Null) Commit(int) { n.Dropped++ }

// CommitOffload implements Out: the frame is dropped.
func (n *Null) CommitOffload(int, *VnetHdr) { n.Dropped++ }

// Offloads implements Out: none.
func (n *Null) Offloads() Offloads { return Offloads{} }

// Flush implements Out: nothing is queued.
func (n *Null) Flush() {}

// Read implements Backend: no frame, ever.
func (n *Null) Read([][]byte) (int, error) { return 0, nil }

// Watch implements Backend: there is no descriptor to watch.
func (n *Null) Watch(Watcher) error { return nil }

// Ready implements Backend: never called, as nothing is watched.
func (n *Null) Ready(uint32, uint32) (Event, error) { return 0, nil }

// Close implements Backend.
func (n *Null) Close() error { return nil }
