// The accelerator: Probe sets the maps and the program up once per
// process; Pair and Unpair put a spliced connection's two sockets in the
// maps and take them out again.

package sockmap

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"gopasst/datapath/sys"
)

// ErrNotSupported is wrapped by every error of Probe: the kernel or our
// privileges lack something the accelerator needs (a map type, the program
// type, a helper, CAP_BPF or CAP_NET_ADMIN), so the caller splices. The
// error says what failed.
var ErrNotSupported = errors.New("sockmap accelerator not supported")

// ErrFull is wrapped by Pair's error when all Options.MaxPairs pairs are in
// use.
var ErrFull = errors.New("sockmap: every pair slot in use")

// DefaultMaxPairs is the capacity when Options.MaxPairs is 0.
const DefaultMaxPairs = 16384

// Options configures Probe.
type Options struct {
	// MaxPairs bounds the connections paired at once (0: DefaultMaxPairs).
	// The maps are sized for it at Probe: 2*MaxPairs sockets each.
	MaxPairs int
	// Unfiltered says that this process installs no seccomp filter after
	// Probe (tests, tools). Otherwise Probe refuses, with ErrNotSupported,
	// when it cannot put bpf on pasta's allow-list (see registerBPF): the
	// filter would kill the process at its first Pair.
	Unfiltered bool
	// MaxQueued bounds, per direction, the bytes the kernel may hold
	// between the two sockets of a pair: redirected, not yet written into
	// the peer's send buffer (0: DefaultMaxQueued). Past it the direction
	// goes back to the splice engine (Read) for the rest of the
	// connection (see doc.go).
	MaxQueued int
}

// DefaultMaxQueued is the budget when Options.MaxQueued is 0.
const DefaultMaxQueued = 1 << 20

// Accel is the in-kernel accelerator of the splice path: it implements the
// splice engine's Accelerator (Pair, Unpair) and the read side the engine
// uses for paired connections (Read). Its methods are not safe for
// concurrent use: the engine calls them from its event loop.
type Accel struct {
	peers   *ebpf.Map // SOCKHASH: receiving socket's cookie -> socket to send to
	sources *ebpf.Map // SOCKMAP: slot -> socket; the verdict program runs on these
	flows   *ebpf.Map // HASH: receiving socket's cookie -> flowState
	prog    *ebpf.Program

	peersFD, sourcesFD, flowsFD int

	pairs []pair  // by slot
	free  []int32 // free slots, a stack
	// bySock maps a descriptor to its slot + 1 (0: not paired). It grows
	// to the highest descriptor seen, never shrinks: no allocation once the
	// process's descriptors have all been seen.
	bySock []int32

	// Scratch for the calls, here so that nothing escapes to the heap.
	attr  elemAttr
	key   uint32
	val   uint64
	flow  flowState
	info  unix.TCPInfo
	stats Stats
	// buf carries the bytes Read copies from a socket into a pipe.
	buf []byte

	// skipNudge leaves out the nudge after adding a socket to the sources
	// map: only for the test that shows what the nudge is for.
	skipNudge bool
	// onUnpair, if set (tests only), is called by Unpair with the pair's
	// flow states (a's, b's) and what Read consumed of each socket.
	onUnpair func(fs [2]flowState, consumed [2]uint64)
}

// pair is one slot: the two sockets and their cookies, and which of the
// four map elements are in.
type pair struct {
	a, b   int32
	ca, cb uint64
	// base: what each socket (a, b) had written at Pair (written).
	base [2]uint64
	// consumed: the bytes Read took from each socket (a, b) since Pair.
	consumed [2]uint64
	in       uint8 // inFlowA | inFlowB | inPeerA | ...
	// own: the directions (1: a to b, 2: b to a) that are the splice
	// engine's for good: over the budget, and the kernel's queue for the
	// peer drained once (Read).
	own uint8
}

// Bits of pair.in: which map elements a pair holds.
const (
	inFlowA   = 1 << iota // flows[ca]
	inFlowB               // flows[cb]
	inPeerA               // peers[ca] = b
	inPeerB               // peers[cb] = a
	inSourceA             // sources[2*slot] = a
	inSourceB             // sources[2*slot+1] = b
)

// The cached result of Probe.
var (
	probeOnce  sync.Once
	probeAccel *Accel
	probeErr   error
)

// Probe returns the process's accelerator, setting it up at the first call
// (maps, program, attachment, and the seccomp registration of bpf): one
// probe per process, the later calls return the first's result whatever
// their options. It must run before the seccomp filter is built, while
// the process holds, in the initial user namespace, CAP_BPF and
// CAP_NET_ADMIN (the socket maps) and CAP_PERFMON (the program reads the
// peer's struct tcp_sock through a BTF pointer), or CAP_SYS_ADMIN for all
// three (checked with capsh: dropping any one of them with CAP_SYS_ADMIN
// makes Probe fail), and can read the kernel's BTF (/sys/kernel/btf/vmlinux).
// Unprivileged BPF (kernel.unprivileged_bpf_disabled = 0) does not help:
// these map and program types are never unprivileged.
//
// o: the options (see Options). Returns the accelerator, or an error
// wrapping ErrNotSupported that says what the kernel or our privileges
// refused.
func Probe(o Options) (*Accel, error) {
	probeOnce.Do(func() {
		probeAccel, probeErr = newAccel(o)
		if probeErr != nil {
			return
		}
		if !registerBPF() && !o.Unfiltered {
			probeAccel.Close()
			probeAccel = nil
			probeErr = fmt.Errorf("%w: bpf(2) cannot be put on the seccomp allow-list (isolation/allow has no number for it)", ErrNotSupported)
		}
	})
	return probeAccel, probeErr
}

// Adopt returns an accelerator over the maps another process set up with
// Probe and passed on (their descriptors, in the order of FDs): pasta's
// privileged supervisor probes, and the sandboxed process, which lacks the
// privileges to create maps or load programs, adopts. The verdict program
// came with the sources map, which holds it. Adopt registers bpf on the
// allow-list as Probe does, so it too must run before the seccomp filter
// is built.
//
// fds: the peers, sources and flows maps, owned by the accelerator from
// now on. Returns the accelerator, or an error wrapping ErrNotSupported.
func Adopt(fds [3]int) (*Accel, error) {
	var maps [3]*ebpf.Map
	for i, fd := range fds {
		m, err := ebpf.NewMapFromFD(fd)
		if err != nil {
			for _, m := range maps[:i] {
				m.Close()
			}
			return nil, fmt.Errorf("%w: adopting map descriptor %d: %w", ErrNotSupported, fd, err)
		}
		maps[i] = m
	}
	x := &Accel{peers: maps[0], sources: maps[1], flows: maps[2], buf: make([]byte, copyMax)}
	n := int(x.sources.MaxEntries() / 2)
	if x.peers.Type() != ebpf.SockHash || x.sources.Type() != ebpf.SockMap || x.flows.Type() != ebpf.Hash || n == 0 {
		x.Close()
		return nil, fmt.Errorf("%w: the adopted maps are not a peers sockhash, a sources sockmap and a flows hash", ErrNotSupported)
	}
	x.pairs, x.free = make([]pair, n), make([]int32, n)
	for i := range x.free {
		x.free[i] = int32(n - 1 - i)
	}
	x.peersFD, x.sourcesFD, x.flowsFD = x.peers.FD(), x.sources.FD(), x.flows.FD()
	if !registerBPF() {
		x.Close()
		return nil, fmt.Errorf("%w: bpf(2) cannot be put on the seccomp allow-list", ErrNotSupported)
	}
	return x, nil
}

// newAccel creates the maps for o.MaxPairs pairs, loads the verdict
// program and attaches it to the sources map: the uncached work of Probe.
// Returns the accelerator, or an error wrapping ErrNotSupported.
func newAccel(o Options) (*Accel, error) {
	n := o.MaxPairs
	if n == 0 {
		n = DefaultMaxPairs
	}
	if n < 0 || n > 1<<24 {
		return nil, fmt.Errorf("%w: MaxPairs %d out of range", ErrNotSupported, o.MaxPairs)
	}
	x := &Accel{pairs: make([]pair, n), free: make([]int32, n), buf: make([]byte, copyMax)}
	for i := range x.free {
		x.free[i] = int32(n - 1 - i) // slot 0 on top
	}
	var err error
	// Value size 8: a lookup from user space then returns the socket's
	// cookie (4 would return nothing useful); an update takes the
	// descriptor in the low 32 bits either way.
	x.peers, err = ebpf.NewMap(&ebpf.MapSpec{Name: "gopasst_peers", Type: ebpf.SockHash,
		KeySize: 8, ValueSize: 8, MaxEntries: uint32(2 * n)})
	if err != nil {
		return nil, fmt.Errorf("%w: creating the peers sockhash: %w", ErrNotSupported, err)
	}
	x.sources, err = ebpf.NewMap(&ebpf.MapSpec{Name: "gopasst_sources", Type: ebpf.SockMap,
		KeySize: 4, ValueSize: 8, MaxEntries: uint32(2 * n)})
	if err != nil {
		x.Close()
		return nil, fmt.Errorf("%w: creating the sources sockmap: %w", ErrNotSupported, err)
	}
	x.flows, err = ebpf.NewMap(&ebpf.MapSpec{Name: "gopasst_flows", Type: ebpf.Hash,
		KeySize: 8, ValueSize: uint32(unsafe.Sizeof(flowState{})), MaxEntries: uint32(2 * n)})
	if err != nil {
		x.Close()
		return nil, fmt.Errorf("%w: creating the flows hash: %w", ErrNotSupported, err)
	}
	x.peersFD, x.sourcesFD, x.flowsFD = x.peers.FD(), x.sources.FD(), x.flows.FD()
	layout, err := loadLayout()
	if err != nil {
		x.Close()
		return nil, fmt.Errorf("%w: %w", ErrNotSupported, err)
	}
	budget := o.MaxQueued
	if budget == 0 {
		budget = DefaultMaxQueued
	}
	if budget < 0 || budget > 1<<30 {
		x.Close()
		return nil, fmt.Errorf("%w: MaxQueued %d out of range", ErrNotSupported, o.MaxQueued)
	}
	x.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{Name: "gopasst_verdict", Type: ebpf.SkSKB,
		AttachType: ebpf.AttachSkSKBVerdict, License: programLicense,
		Instructions: verdict(x.peers, x.flows, layout, int32(budget))})
	if err != nil {
		x.Close()
		return nil, fmt.Errorf("%w: loading the sk_skb verdict program: %w", ErrNotSupported, err)
	}
	err = link.RawAttachProgram(link.RawAttachProgramOptions{Target: x.sourcesFD, Program: x.prog,
		Attach: ebpf.AttachSkSKBVerdict})
	if err != nil {
		x.Close()
		return nil, fmt.Errorf("%w: attaching the verdict program to the sources sockmap: %w", ErrNotSupported, err)
	}
	// The map holds the program now: its descriptor is not needed.
	x.prog.Close()
	x.prog = nil
	return x, nil
}

// Close releases the maps, which removes every socket still in them. Only
// for an accelerator that will not be used again (tests; the process's
// end does it otherwise). Returns nil.
func (x *Accel) Close() error {
	for _, c := range []interface{ Close() error }{x.prog, x.sources, x.peers, x.flows} {
		if c != nil && !isNil(c) {
			c.Close()
		}
	}
	x.prog, x.sources, x.peers, x.flows = nil, nil, nil, nil
	return nil
}

// isNil reports whether c holds a nil pointer (an interface holding a
// typed nil is not == nil).
func isNil(c interface{ Close() error }) bool {
	switch v := c.(type) {
	case *ebpf.Map:
		return v == nil
	case *ebpf.Program:
		return v == nil
	}
	return false
}

// FDs returns the descriptors of the three maps, the only ones the
// accelerator keeps (the program is held by the sources map): for a
// process that closes leaked descriptors, to keep them.
func (x *Accel) FDs() []int { return []int{x.peersFD, x.sourcesFD, x.flowsFD} }

// Stats are the accelerator's counters since Probe.
type Stats struct {
	Pairs    uint64 // connections paired (Pair returned nil)
	Refused  uint64 // Pair errors: the connection stayed on splice alone
	Unpairs  uint64 // connections taken out of the maps
	Returned uint64 // directions given back to the splice engine (over MaxQueued)
}

// Stats returns the counters.
func (x *Accel) Stats() Stats { return x.stats }

// Capacity returns the number of pairs the accelerator can hold at once.
func (x *Accel) Capacity() int { return len(x.pairs) }

// InUse returns the number of pairs in the maps now.
func (x *Accel) InUse() int { return len(x.pairs) - len(x.free) }

// slotOf returns the slot of paired socket fd, or -1.
func (x *Accel) slotOf(fd int) int {
	if fd < 0 || fd >= len(x.bySock) {
		return -1
	}
	return int(x.bySock[fd]) - 1
}

// setSlot records slot s + 1 for socket fd (0 with s = -1: unpaired),
// growing bySock as needed.
func (x *Accel) setSlot(fd, s int) {
	if fd >= len(x.bySock) {
		n := 2 * len(x.bySock)
		if n < 1024 {
			n = 1024
		}
		for n <= fd {
			n *= 2
		}
		grown := make([]int32, n)
		copy(grown, x.bySock)
		x.bySock = grown
	}
	x.bySock[fd] = int32(s + 1)
}

// pairError is Pair's error: the errno with the step that failed. Pair
// returns it through an error interface, which allocates: only failures
// do.
type pairError struct {
	step string
	a, b int
	err  error
}

// Error says which step of pairing a with b failed, and why.
func (e *pairError) Error() string {
	return fmt.Sprintf("sockmap: pairing sockets %d and %d: %s: %v", e.a, e.b, e.step, e.err)
}

// Unwrap returns the cause (an errno, or ErrFull).
func (e *pairError) Unwrap() error { return e.err }

// Pair makes the kernel forward what socket a receives to socket b's
// egress and what b receives to a's: from its return on, the bytes of the
// two directions no longer reach our process. Both must be connected TCP
// sockets in the ESTABLISHED state (the kernel refuses others, EOPNOTSUPP:
// one whose peer already sent its FIN, for example), in any network
// namespaces, not yet paired.
//
// Bytes already queued on either socket when Pair is called are forwarded
// too, in order, before any later byte: Pair hands them to the program
// itself (nudge). The caller must not have read from either socket
// anything it has not written to the other already.
//
// Pair returns an error only when it changed nothing (both sockets out of
// the maps, nothing forwarded): the caller keeps splicing, and must not
// call Unpair. A failure after the first socket took the in-kernel path
// cannot be undone without losing the bytes the kernel holds for its peer
// (removing a socket from every map drops them), so Pair then keeps that
// one direction and returns nil: the other direction's bytes stay in their
// receive queue, where the splice engine, which watches both sockets
// anyway, moves them. Unpair cleans up either way.
//
// Pair allocates nothing in steady state (the first sight of a descriptor
// number above every earlier one grows an index; failures allocate their
// error).
func (x *Accel) Pair(a, b int) error {
	if err := x.pair(a, b); err != nil {
		x.stats.Refused++
		return err
	}
	x.stats.Pairs++
	return nil
}

// pair is Pair without the counting. Returns nil, or what Pair returns.
func (x *Accel) pair(a, b int) error {
	if a < 0 || b < 0 || a == b || a > 1<<30 || b > 1<<30 {
		return &pairError{"checking the descriptors", a, b, unix.EBADF}
	}
	if x.slotOf(a) >= 0 || x.slotOf(b) >= 0 {
		return &pairError{"checking the descriptors", a, b, unix.EALREADY}
	}
	if len(x.free) == 0 {
		return &pairError{"taking a slot", a, b, ErrFull}
	}
	s := int(x.free[len(x.free)-1])
	p := &x.pairs[s]
	*p = pair{a: int32(a), b: int32(b)}
	if e := socketCookie(a, &p.ca); e != 0 {
		return &pairError{"SO_COOKIE", a, b, e}
	}
	if e := socketCookie(b, &p.cb); e != 0 {
		return &pairError{"SO_COOKIE", a, b, e}
	}
	var e unix.Errno
	if p.base[0], e = x.written(a); e != 0 {
		return &pairError{"reading what the first socket wrote", a, b, e}
	}
	if p.base[1], e = x.written(b); e != 0 {
		return &pairError{"reading what the second socket wrote", a, b, e}
	}
	// The flow states before the peers: the program looks its state up
	// first, and an skb with no state would go unaccounted.
	x.flow = flowState{}
	if e := mapUpdate(&x.attr, x.flowsFD, unsafe.Pointer(&p.ca), unsafe.Pointer(&x.flow), updateNoExist); e != 0 {
		return &pairError{"adding the first socket's state", a, b, e}
	}
	p.in |= inFlowA
	if e := mapUpdate(&x.attr, x.flowsFD, unsafe.Pointer(&p.cb), unsafe.Pointer(&x.flow), updateNoExist); e != 0 {
		x.undo(p)
		return &pairError{"adding the second socket's state", a, b, e}
	}
	p.in |= inFlowB
	// Both peers first: when a socket enters the sources map, the
	// program runs for it from its next received segment on, and must
	// find its peer. peers alone runs no program (it has none attached).
	// The kernel checks the socket's state here as it does for sources,
	// so a refusal comes before anything is forwarded.
	x.val = uint64(b)
	if e := mapUpdate(&x.attr, x.peersFD, unsafe.Pointer(&p.ca), unsafe.Pointer(&x.val), updateNoExist); e != 0 {
		x.undo(p)
		return &pairError{"adding the second socket to the peers map", a, b, e}
	}
	p.in |= inPeerA
	x.val = uint64(a)
	if e := mapUpdate(&x.attr, x.peersFD, unsafe.Pointer(&p.cb), unsafe.Pointer(&x.val), updateNoExist); e != 0 {
		x.undo(p)
		return &pairError{"adding the first socket to the peers map", a, b, e}
	}
	p.in |= inPeerB
	x.key, x.val = uint32(2*s), uint64(a)
	if e := mapUpdate(&x.attr, x.sourcesFD, unsafe.Pointer(&x.key), unsafe.Pointer(&x.val), updateAny); e != 0 {
		x.undo(p)
		return &pairError{"adding the first socket to the sources map", a, b, e}
	}
	p.in |= inSourceA
	x.free = x.free[:len(x.free)-1]
	x.setSlot(a, s)
	x.setSlot(b, s)
	if !x.skipNudge {
		nudge(a)
	}
	// From here on a's bytes may be in b's psock: no undo.
	x.key, x.val = uint32(2*s+1), uint64(b)
	if e := mapUpdate(&x.attr, x.sourcesFD, unsafe.Pointer(&x.key), unsafe.Pointer(&x.val), updateAny); e == 0 {
		p.in |= inSourceB
		if !x.skipNudge {
			nudge(b)
		}
	}
	return nil
}

// undo removes the elements of p that Pair added, before any socket of p
// entered the sources map.
func (x *Accel) undo(p *pair) {
	if p.in&inFlowA != 0 {
		mapDelete(&x.attr, x.flowsFD, unsafe.Pointer(&p.ca))
	}
	if p.in&inFlowB != 0 {
		mapDelete(&x.attr, x.flowsFD, unsafe.Pointer(&p.cb))
	}
	if p.in&inPeerA != 0 {
		mapDelete(&x.attr, x.peersFD, unsafe.Pointer(&p.ca))
	}
	if p.in&inPeerB != 0 {
		mapDelete(&x.attr, x.peersFD, unsafe.Pointer(&p.cb))
	}
	p.in = 0
}

// Unpair takes sockets a and b, paired by Pair, out of the maps and frees
// their slot; unknown or already unpaired sockets are ignored. Call it
// before closing either socket: after both ends of stream went through
// Read (which waits for the kernel's queues), or for a reset. The kernel
// drops what it still holds for a socket that leaves the maps. Elements the kernel already removed
// (a closed or reset socket) are no error.
//
// a, b: the sockets as given to Pair (in either order).
func (x *Accel) Unpair(a, b int) {
	s := x.slotOf(a)
	if s < 0 || s != x.slotOf(b) {
		return
	}
	p := &x.pairs[s]
	if x.onUnpair != nil {
		var fs [2]flowState
		mapLookup(&x.attr, x.flowsFD, unsafe.Pointer(&p.ca), unsafe.Pointer(&fs[0]))
		mapLookup(&x.attr, x.flowsFD, unsafe.Pointer(&p.cb), unsafe.Pointer(&fs[1]))
		x.onUnpair(fs, p.consumed)
	}
	// Sources first: no program runs for either socket afterwards, so
	// none can look for a peer that is gone.
	if p.in&inSourceA != 0 {
		x.key = uint32(2 * s)
		mapDelete(&x.attr, x.sourcesFD, unsafe.Pointer(&x.key))
	}
	if p.in&inSourceB != 0 {
		x.key = uint32(2*s + 1)
		mapDelete(&x.attr, x.sourcesFD, unsafe.Pointer(&x.key))
	}
	x.undo(p)
	x.setSlot(a, -1)
	x.setSlot(b, -1)
	*p = pair{}
	x.free = append(x.free, int32(s))
	x.stats.Unpairs++
}

// written returns what socket fd has written since it was connected, as
// TCP counts it: the bytes acknowledged (TCP_INFO's tcpi_bytes_acked) and
// those still in its send queue (SIOCOUTQ: write_seq - snd_una), which is
// write_seq up to a constant. Returns the count or the errno.
func (x *Accel) written(fd int) (uint64, unix.Errno) {
	if e := tcpInfo(fd, &x.info); e != 0 {
		return 0, e
	}
	q, e := outq(fd)
	if e != 0 {
		return 0, e
	}
	return x.info.Bytes_acked + uint64(q), 0
}

// copyMax is the most Read copies at once (never more than the pipe
// holds: its n).
const copyMax = 256 << 10

// held returns what the kernel holds for the peer of socket k (0: a, 1: b)
// of pair p: the bytes the program redirected from it that the backlog
// worker has not yet written into the peer's send queue. It leaves the
// socket's flow state in x.flow. Valid only while nothing but that worker
// writes into the peer: until Read gives the direction to the engine.
// Returns the count (0 or less: none) or the errno.
func (x *Accel) held(p *pair, k int) (int64, unix.Errno) {
	cookie, to := &p.ca, int(p.b)
	if k == 1 {
		cookie, to = &p.cb, int(p.a)
	}
	if e := mapLookup(&x.attr, x.flowsFD, unsafe.Pointer(cookie), unsafe.Pointer(&x.flow)); e != 0 {
		return 0, e
	}
	if x.flow.Flags&flowBroken != 0 {
		return 0, unix.ECONNRESET
	}
	w, e := x.written(to)
	if e != 0 {
		return 0, e
	}
	return int64(x.flow.Sent) - int64(w-p.base[1-k]), 0
}

// Read is the splice engine's read side for a paired connection, in place
// of splice(from -> pipe): it moves into pipe what from has for our
// process, never before the bytes the kernel still holds for to. While
// the program redirects (the usual case) from has nothing for us but its
// end of stream; once the direction went over its budget, the program
// passes from's bytes up to from itself, where splice(2) does not see them
// (tcp_bpf keeps them on the psock's own queue, which only recvmsg reads),
// and Read copies them: read, then written whole into the empty pipe.
//
// from, to: the two sockets of one pair (from's bytes go to to); pipe: the
// write end of the direction's pipe, empty; n: the most to move, at most
// the pipe's capacity (at most copyMax is copied at once). Returns:
//   - n > 0: bytes now in the pipe, for to;
//   - 0: from's end of stream, with every byte before it in to's send
//     queue or the pipe: shut to down for writing;
//   - unix.EAGAIN: nothing for us now (wait for EPOLLIN on from);
//   - unix.EBUSY: the kernel still holds bytes of from's for to, or bytes
//     passed up are still on their way: neither read from nor shut to
//     down; try again on EPOLLOUT of to (the kernel's worker writes into
//     to as its send buffer drains);
//   - unix.ECONNRESET: the program could not cut the repeated bytes of an
//     overlapping skb (see doc.go): the stream cannot go on, reset;
//   - another errno: of the calls (ECONNRESET, EBADF for unknown sockets).
//
// It allocates nothing.
func (x *Accel) Read(from, to, pipe, n int) (int, unix.Errno) {
	s := x.slotOf(from)
	if s < 0 || s != x.slotOf(to) || n <= 0 {
		return 0, unix.EBADF
	}
	p := &x.pairs[s]
	k := 0
	if from == int(p.b) {
		k = 1
	}
	if p.in&(inSourceA<<k) == 0 {
		// Pair could not give from a program (see Pair): its bytes are
		// in its receive queue, the splice engine's as without us.
		return sys.Splice(from, pipe, n, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	}
	if p.own&(1<<k) == 0 {
		h, e := x.held(p, k)
		if e != 0 {
			return 0, e
		}
		if h > 0 {
			return 0, unix.EBUSY
		}
		if x.flow.Flags&flowCongested == 0 {
			// The kernel path is on: only the end of the stream can be
			// ours. A byte here was passed up after the state was read:
			// the next call sees the direction congested.
			m, e := recvFrom(from, x.buf[:1], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			if e != 0 {
				return 0, e
			}
			if m > 0 {
				return 0, unix.EBUSY
			}
			return 0, 0
		}
		// Congested, and everything redirected before is in to: from
		// now on the program only passes, and the direction is ours.
		p.own |= 1 << k
		x.stats.Returned++
	}
	if n > len(x.buf) {
		n = len(x.buf)
	}
	m, e := recvFrom(from, x.buf[:n], unix.MSG_DONTWAIT)
	if e != 0 {
		return 0, e
	}
	// The state after the read: a flowBroken set for any skb the read
	// took is seen (the program ran before it queued the skb).
	cookie := &p.ca
	if k == 1 {
		cookie = &p.cb
	}
	if e := mapLookup(&x.attr, x.flowsFD, unsafe.Pointer(cookie), unsafe.Pointer(&x.flow)); e != 0 {
		return 0, e
	}
	if x.flow.Flags&flowBroken != 0 {
		return 0, unix.ECONNRESET
	}
	if m == 0 {
		// The end of the stream, unless passed bytes are still on the
		// psock's backlog (its receive buffer was full): the program
		// counted them.
		if x.flow.Passed > p.consumed[k] {
			return 0, unix.EBUSY
		}
		return 0, 0
	}
	p.consumed[k] += uint64(m)
	// The pipe is empty and holds n bytes at least: the write is whole
	// (a short one would lose bytes: reset rather).
	if w, e := writeFD(pipe, x.buf[:m]); e != 0 || w != m {
		if e == 0 {
			e = unix.EIO
		}
		return 0, e
	}
	return m, 0
}
