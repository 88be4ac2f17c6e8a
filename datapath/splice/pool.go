// The pools: sockets made ahead of need on both sides, and pipes sized
// once. Everything here may run after the sandbox (Refill, from the 1 s
// tick and from Connect), so every call it makes is registered.

package splice

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"gopasst/datapath/logging"
	"gopasst/datapath/sys"
	"gopasst/isolation/allow"
)

var (
	_ = allow.InetSocket(allow.Pasta, "splice: the pooled sockets spliced connections are made from, on both sides (sockPool.fill, from Handler.Refill)")
	_ = allow.Syscall(allow.Pasta, "pipe2", "splice: the pipes of spliced connections, one per direction (pipePool.fill, sys.Pipe2)")
	_ = allow.SyscallArg(allow.Pasta, "fcntl", allow.ArgCheck{Arg: 1, Mask: 0xffffffff, Value: unix.F_SETPIPE_SZ, Name: "F_SETPIPE_SZ"},
		"splice: a new pipe grown to the chosen size (newPipe, sys.SetPipeSize)")
	_ = allow.SyscallArg(allow.Pasta, "fcntl", allow.ArgCheck{Arg: 1, Mask: 0xffffffff, Value: unix.F_GETPIPE_SZ, Name: "F_GETPIPE_SZ"},
		"splice: the size of a new pipe that could not be grown (newPipe, sys.PipeSize)")
)

// sockPool holds pre-opened sockets of one family on one side.
type sockPool struct {
	fd     []int32
	n      int  // sockets in fd[:n]
	size   int  // len(fd)
	gone   bool // the kernel lacks the family: never filled again
	logged bool // a failure was logged
}

// init sizes the pool for size sockets.
func (p *sockPool) init(size int) {
	p.fd = make([]int32, size)
	p.size = size
}

// take returns a socket of the pool, or -1 if it is empty.
func (p *sockPool) take() int {
	if p.n == 0 {
		return -1
	}
	p.n--
	return int(p.fd[p.n])
}

// low reports whether the pool should be topped up.
func (p *sockPool) low() bool { return !p.gone && p.n < p.size }

// fill opens sockets of family af (AF_INET, AF_INET6) until the pool is
// full, on the calling thread (so in its network namespace): non-blocking,
// close-on-exec, TCP_NODELAY. A family the kernel lacks marks the pool
// gone; other failures (descriptor limits) just stop this round.
//
// side: for the log line.
func (p *sockPool) fill(af int, side Side) {
	for p.n < p.size && !p.gone {
		fd, err := unix.Socket(af, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			if err == unix.EAFNOSUPPORT || err == unix.EPROTONOSUPPORT {
				p.gone = true
			}
			p.logOnce(side, af, err)
			return
		}
		if e := sys.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); e != 0 {
			unix.Close(fd)
			p.logOnce(side, af, e)
			return
		}
		p.fd[p.n] = int32(fd)
		p.n++
	}
}

// logOnce logs the first failure to fill the pool, at debug.
func (p *sockPool) logOnce(side Side, af int, err error) {
	if p.logged || !logging.Debugging() {
		return
	}
	p.logged = true
	v := 4
	if af == unix.AF_INET6 {
		v = 6
	}
	logging.Debugf("TCP splice: cannot fill the %s IPv%d socket pool: %v", side, v, err)
}

// close closes the pool's sockets.
func (p *sockPool) close() {
	for p.n > 0 {
		p.n--
		unix.Close(int(p.fd[p.n]))
	}
}

// fillSide tops up both families' pools of side: on this thread for Host,
// through NSDo (on this thread if nil) for NS.
func (h *Handler) fillSide(side Side) {
	if side == Host {
		h.socks[Host][0].fill(unix.AF_INET, Host)
		h.socks[Host][1].fill(unix.AF_INET6, Host)
		return
	}
	if h.nsDo == nil {
		h.fillNSPools()
		return
	}
	if err := h.nsDo(h.fillNS); err != nil && logging.Debugging() {
		logging.Debugf("TCP splice: entering the namespace to fill its socket pools: %v", err)
	}
}

// fillNSPools tops up the namespace's pools on the calling thread, which
// NSDo runs inside the namespace. Returns nil (failures are per pool).
func (h *Handler) fillNSPools() error {
	h.socks[NS][0].fill(unix.AF_INET, NS)
	h.socks[NS][1].fill(unix.AF_INET6, NS)
	return nil
}

// Refill trims the pipe pool back to its target (pairs closed connections
// gave back beyond it) and tops up the socket and pipe pools. The loop's
// 1 s tick calls it,
// and so does Connect when more than half of a pool is used (as the C
// original); the namespace is entered only if one of its pools is short.
func (h *Handler) Refill() {
	if h.done {
		return
	}
	h.pipes.trim()
	h.pipes.fill()
	for side := Host; side <= NS; side++ {
		if h.socks[side][0].low() || h.socks[side][1].low() {
			h.fillSide(side)
		}
	}
}

// closePools closes every pooled socket and pipe.
func (h *Handler) closePools() {
	for s := range h.socks {
		for f := range h.socks[s] {
			h.socks[s][f].close()
		}
	}
	h.pipes.close()
}

// pipePair is the two pipes of one connection: fd[d] the read and write
// ends of direction d's, size[d] its capacity.
type pipePair struct {
	fd   [2][2]int32
	size [2]int32
}

// pipePool holds ready pipe pairs, all asked for the same size. It is
// filled to target pairs, and takes back up to twice that from closed
// connections: a pair given back is one pipe2 and one F_SETPIPE_SZ less
// for the next connection (a refill after the sandbox may be refused its
// size, see init).
type pipePool struct {
	p      []pipePair
	n      int // pairs in p[:n]
	target int // what fill fills to
	size   int // the size new pipes are asked for
	logged bool
}

// init makes the first pool of pairs pipes and chooses the pipe size:
// maxPipeSize, or less so that the pool takes at most a quarter of the
// per-user budget of pipe pages (fs.pipe-user-pages-soft), halved until
// every pipe takes it, never below the default size of a fresh pipe.
//
// Why the budget: past the soft limit, the kernel gives an unprivileged
// user's new pipes 2 pages and refuses F_SETPIPE_SZ (EPERM), and the
// budget is the user's, shared with the user's other processes. A first
// pool of 32 pairs at 1 MiB took all of 16384 pages, and every pipe made
// after it held 8 KiB: connections on those moved 8 KiB per splice, at
// half the throughput and four times the CPU per byte (bench/README.md,
// "pasta: local connections"). A quarter leaves room for the pipes that
// connections hold and for refills.
//
// Returns the size chosen, or an error if the pipes cannot be made.
func (pp *pipePool) init(pairs int) (int, error) {
	pp.p = make([]pipePair, 2*pairs)
	pp.target = pairs
	for pp.n < pairs {
		q := &pp.p[pp.n]
		for d := 0; d < 2; d++ {
			if e := sys.Pipe2(&q.fd[d], unix.O_NONBLOCK|unix.O_CLOEXEC); e != 0 {
				if d == 1 {
					closePipe(&q.fd[0])
				}
				pp.close()
				return 0, fmt.Errorf("splice: pipe2: %w", e)
			}
		}
		pp.n++
	}
	def, e := sys.PipeSize(int(pp.p[0].fd[0][0]))
	if e != 0 {
		pp.close()
		return 0, fmt.Errorf("splice: F_GETPIPE_SZ: %w", e)
	}
	chosen := 0
	for size := pipeBudget(pairs); size > def && chosen == 0; size /= 2 {
		if pp.resize(size) {
			chosen = size
		}
	}
	if chosen == 0 {
		// A failed attempt may have grown some pipes: back to the default
		// (shrinking an empty pipe cannot fail for want of memory).
		pp.resize(def)
		chosen = def
	}
	pp.size = chosen
	return chosen, nil
}

// pipeBudget returns the largest pipe size, a power of two at most
// maxPipeSize, at which the 2*pairs pipes of a pool take at most a quarter
// of fs.pipe-user-pages-soft (maxPipeSize if the limit is 0, no limit, or
// cannot be read). Read once, before the sandbox.
func pipeBudget(pairs int) int {
	b, err := os.ReadFile("/proc/sys/fs/pipe-user-pages-soft")
	if err != nil {
		return maxPipeSize
	}
	pages, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pages <= 0 {
		return maxPipeSize
	}
	limit := pages * os.Getpagesize() / 4 / (2 * pairs)
	size := maxPipeSize
	for size > limit && size > 1 {
		size /= 2
	}
	return size
}

// resize sets every pooled pipe to size, recording each one's capacity.
// Returns whether all took it.
func (pp *pipePool) resize(size int) bool {
	for i := 0; i < pp.n; i++ {
		q := &pp.p[i]
		for d := 0; d < 2; d++ {
			c, e := sys.SetPipeSize(int(q.fd[d][0]), size)
			if e != 0 {
				return false
			}
			q.size[d] = int32(c)
		}
	}
	return true
}

// fill makes pairs until the pool is full, each pipe non-blocking,
// close-on-exec and asked for the chosen size; a pipe the kernel will not
// grow (after the sandbox, unprivileged) keeps the capacity it has.
func (pp *pipePool) fill() {
	for pp.n < pp.target {
		q := &pp.p[pp.n]
		ok := true
		for d := 0; d < 2 && ok; d++ {
			c, e := newPipe(&q.fd[d], pp.size)
			if e != 0 {
				if d == 1 {
					closePipe(&q.fd[0])
				}
				if !pp.logged && logging.Debugging() {
					pp.logged = true
					logging.Debugf("TCP splice: cannot fill the pipe pool: %v", e)
				}
				return
			}
			q.size[d] = int32(c)
		}
		pp.n++
	}
}

// newPipe makes a non-blocking, close-on-exec pipe in p and asks for size
// bytes. Returns its capacity, or the errno of pipe2 (or of F_GETPIPE_SZ,
// the pipe then closed).
func newPipe(p *[2]int32, size int) (int, unix.Errno) {
	if e := sys.Pipe2(p, unix.O_NONBLOCK|unix.O_CLOEXEC); e != 0 {
		return 0, e
	}
	if c, e := sys.SetPipeSize(int(p[0]), size); e == 0 {
		return c, 0
	}
	c, e := sys.PipeSize(int(p[0]))
	if e != 0 {
		closePipe(p)
		return 0, e
	}
	return c, 0
}

// take hands out a pair. Returns false if the pool is empty.
func (pp *pipePool) take(q *pipePair) bool {
	if pp.n == 0 {
		return false
	}
	pp.n--
	*q = pp.p[pp.n]
	return true
}

// put gives an empty pair back. Returns false if the pool is full (the
// caller closes the pipes then).
func (pp *pipePool) put(q *pipePair) bool {
	if pp.n == len(pp.p) {
		return false
	}
	pp.p[pp.n] = *q
	pp.n++
	return true
}

// trim closes the pairs given back beyond the target (Refill, every
// second): the pool keeps them only while connections come and go.
func (pp *pipePool) trim() {
	for pp.n > pp.target {
		pp.n--
		closePipe(&pp.p[pp.n].fd[0])
		closePipe(&pp.p[pp.n].fd[1])
	}
}

// low reports whether more than half of the pool is used.
func (pp *pipePool) low() bool { return pp.n < pp.target/2 }

// close closes the pooled pipes.
func (pp *pipePool) close() {
	for pp.n > 0 {
		pp.n--
		q := &pp.p[pp.n]
		closePipe(&q.fd[0])
		closePipe(&q.fd[1])
	}
}

// closePipe closes both ends of p and marks them closed.
func closePipe(p *[2]int32) {
	for k := range p {
		if p[k] >= 0 {
			unix.Close(int(p[k]))
			p[k] = -1
		}
	}
}
