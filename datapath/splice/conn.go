// One spliced connection: its events, the completion of its connect, the
// bytes of each direction, half-closes, resets and closing.

package splice

import (
	"golang.org/x/sys/unix"

	"gopasst/datapath/logging"
	"gopasst/datapath/loop"
	"gopasst/datapath/sys"
	"gopasst/isolation/allow"
)

// conn is one slot of the connection table. Socket 0 is the accepted one,
// socket 1 the one connected towards the destination; direction d moves
// bytes from socket d to socket 1-d through pipes.fd[d].
type conn struct {
	sock    [2]int32
	pipes   pipePair
	pending [2]int    // bytes in pipe d
	events  [2]uint32 // epoll events registered for socket k
	flags   uint16
}

// conn flags. The per-direction ones are shifted left by the direction.
const (
	fUsed       uint16 = 1 << iota // the slot holds a connection
	fConnecting                    // connect under way, no pipes yet
	fClosed                        // descriptors closed, slot freed at the end of the turn
	fPaired                        // the Accelerator took the connection
	fPipes                         // pipes taken
	fEOF0                          // direction 0 read its source's end of stream
	fEOF1
	fShut0 // direction 0 shut its destination down for writing: finished
	fShut1
	fMore0 // direction 0's last read filled >= 90 % of the pipe
	fMore1
	fHeld0 // direction 0 waits for the Reader's kernel queue (EBUSY)
	fHeld1
)

// reset empties the slot.
func (c *conn) reset() {
	*c = conn{sock: [2]int32{-1, -1}}
	for d := range c.pipes.fd {
		c.pipes.fd[d] = [2]int32{-1, -1}
	}
}

// wanted returns the epoll events socket k of an established connection
// needs: EPOLLIN|EPOLLRDHUP while its direction may read (not at its end,
// pipe empty), EPOLLOUT while the other direction's pipe holds bytes for
// it. With neither, EPOLLET alone: EPOLLERR and EPOLLHUP cannot be masked,
// and a hung-up socket with bytes waiting behind a full pipe would report
// its hang-up on every turn; edge-triggered, it reports it once (and a
// reset still comes as a new edge).
func (c *conn) wanted(k int) uint32 {
	var ev uint32
	if c.flags&(fEOF0<<k|fHeld0<<k) == 0 && c.pending[k] == 0 {
		ev |= unix.EPOLLIN | unix.EPOLLRDHUP
	}
	if c.pending[1-k] > 0 || c.flags&(fHeld0<<(1-k)) != 0 {
		ev |= unix.EPOLLOUT
	}
	if ev == 0 {
		ev = unix.EPOLLET
	}
	return ev
}

// event handles the epoll events of one of a spliced connection's
// sockets: the loop's handler for loop.KindTCPSplice.
//
// r: the socket's reference (slot and socket in the index); events: what
// epoll reported.
func (h *Handler) event(r loop.Ref, events uint32) {
	x := r.Index()
	i, k := int32(x>>1), int(x&1)
	if int(i) >= len(h.conns) {
		return
	}
	c := &h.conns[i]
	if c.flags&fUsed == 0 || c.flags&fClosed != 0 || int(c.sock[k]) != r.FD() {
		return // closed earlier in this turn: a stale event
	}
	if events&unix.EPOLLERR != 0 {
		if logging.Debugging() {
			e, _ := sys.GetsockoptInt(int(c.sock[k]), unix.SOL_SOCKET, unix.SO_ERROR)
			logging.Debugf("TCP splice %d: socket %d error: %v", i, k, unix.Errno(e))
		}
		h.fail(i)
		return
	}
	if c.flags&fConnecting != 0 {
		if k == 1 && events&unix.EPOLLOUT != 0 && events&unix.EPOLLHUP == 0 {
			h.established(i)
			return
		}
		if logging.Debugging() {
			logging.Debugf("TCP splice %d: events %#x on socket %d while connecting", i, events, k)
		}
		h.fail(i)
		return
	}
	if events&unix.EPOLLHUP != 0 && c.flags&(fShut0<<(1-k)) == 0 {
		// Hung up, but not by a FIN after our own shutdown: a reset whose
		// error was already read, or a close without FIN.
		if logging.Debugging() {
			logging.Debugf("TCP splice %d: socket %d hung up", i, k)
		}
		h.fail(i)
		return
	}
	if events&unix.EPOLLOUT != 0 && !h.move(i, 1-k) {
		return
	}
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP) != 0 && !h.move(i, k) {
		return
	}
	h.update(i)
}

// established completes the connect of slot i once its socket is writable:
// SO_ERROR checked, TCP_NODELAY and TCP_QUICKACK on both sockets, pipes
// taken, the Accelerator asked, and both sockets watched for data.
func (h *Handler) established(i int32) {
	c := &h.conns[i]
	if e, err := sys.GetsockoptInt(int(c.sock[1]), unix.SOL_SOCKET, unix.SO_ERROR); err != 0 || e != 0 {
		if logging.Debugging() {
			logging.Debugf("TCP splice %d: connect failed: %v", i, unix.Errno(e))
		}
		h.fail(i)
		return
	}
	for k := 0; k < 2; k++ {
		sys.SetsockoptInt(int(c.sock[k]), unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		sys.SetsockoptInt(int(c.sock[k]), unix.IPPROTO_TCP, unix.TCP_QUICKACK, 1)
	}
	if h.pipes.n == 0 {
		h.pipes.fill()
	}
	if !h.pipes.take(&c.pipes) {
		if logging.Debugging() {
			logging.Debugf("TCP splice %d: no pipes", i)
		}
		h.fail(i)
		return
	}
	c.flags = c.flags&^fConnecting | fPipes
	h.stats.Connected++
	if h.pipes.low() {
		h.pipes.fill()
	}
	if h.accel != nil {
		if err := h.accel.Pair(int(c.sock[0]), int(c.sock[1])); err != nil {
			h.stats.PairErrors++
			if !h.pairLogged && logging.Debugging() {
				h.pairLogged = true
				logging.Debugf("TCP splice: accelerator refused a connection, splicing: %v", err)
			}
		} else {
			c.flags |= fPaired
			h.stats.Pairs++
		}
	}
	h.update(i)
}

var (
	_ = allow.Syscall(allow.Pasta, "splice", "splice: a spliced connection's bytes, socket to pipe and pipe to socket (Handler.move, sys.Splice)")
	_ = allow.Syscall(allow.Pasta, "shutdown", "splice: a FIN read on one socket passed on to the other (Handler.move, sys.ShutdownWrite)")
	_ = allow.Syscall(allow.Pasta, "getsockopt", "splice: SO_ERROR of a completed connect, and of a socket in error for the debug log (Handler.established, event)")
)

// move runs direction d of slot i: it first writes what the pipe still
// holds, then reads from the source into the emptied pipe and writes it
// out, for at most maxRounds reads, until the source has nothing (EAGAIN),
// a read was short (the queue is drained: the next turn's level-triggered
// EPOLLIN tells if more came), the destination is full (the rest waits in
// the pipe for EPOLLOUT), or the source's end of stream, which shuts the
// destination down for writing. Returns false if the connection was
// closed (reset, or the clean close after both directions' ends).
func (h *Handler) move(i int32, d int) bool {
	c := &h.conns[i]
	if c.flags&(fShut0<<d) != 0 {
		return true
	}
	src, dst := int(c.sock[d]), int(c.sock[1-d])
	rd, wr := int(c.pipes.fd[d][0]), int(c.pipes.fd[d][1])
	size := int(c.pipes.size[d])
	for round := 0; ; round++ {
		if c.pending[d] > 0 {
			flags := unix.SPLICE_F_MOVE | unix.SPLICE_F_NONBLOCK
			if c.flags&(fMore0<<d) != 0 {
				flags |= unix.SPLICE_F_MORE
			}
			n, e := sys.Splice(rd, dst, c.pending[d], flags)
			if e == unix.EAGAIN {
				return true
			}
			if e != 0 {
				return h.spliceError(i, d, "write", e)
			}
			c.pending[d] -= n
			if d == 0 {
				h.stats.BytesToDst += uint64(n)
			} else {
				h.stats.BytesFromDst += uint64(n)
			}
			if c.pending[d] > 0 {
				return true // the socket is full: EPOLLOUT
			}
		}
		if c.flags&(fEOF0<<d) != 0 {
			return true
		}
		if round > 0 && (c.flags&(fMore0<<d) == 0 || round >= maxRounds) {
			return true // drained, or enough for one event
		}
		var n int
		var e unix.Errno
		if c.flags&fPaired != 0 && h.rd != nil {
			c.flags &^= fHeld0 << d
			if n, e = h.rd.Read(src, dst, wr, size); e == unix.EBUSY {
				c.flags |= fHeld0 << d
				return true
			}
		} else {
			n, e = sys.Splice(src, wr, size, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		}
		if e == unix.EAGAIN {
			return true
		}
		if e != 0 {
			return h.spliceError(i, d, "read", e)
		}
		if n == 0 {
			return h.eof(i, d)
		}
		c.pending[d] = n
		if n*10 >= size*9 {
			c.flags |= fMore0 << d
		} else {
			c.flags &^= fMore0 << d
		}
	}
}

// spliceError resets slot i after a failed splice of direction d (what:
// "read" or "write"). Returns false (the connection is gone).
func (h *Handler) spliceError(i int32, d int, what string, e unix.Errno) bool {
	if logging.Debugging() {
		logging.Debugf("TCP splice %d: direction %d %s: %v", i, d, what, e)
	}
	h.fail(i)
	return false
}

// eof handles the end of direction d's source (its pipe is empty, as it is
// whenever we read): the destination is shut down for writing, and with
// both directions ended the connection closes cleanly. Returns false if
// the connection was closed.
func (h *Handler) eof(i int32, d int) bool {
	c := &h.conns[i]
	c.flags |= fEOF0 << d
	if e := sys.ShutdownWrite(int(c.sock[1-d])); e != 0 {
		if logging.Debugging() {
			logging.Debugf("TCP splice %d: shutdown of socket %d: %v", i, 1-d, e)
		}
		h.fail(i)
		return false
	}
	c.flags |= fShut0 << d
	if c.flags&(fShut0|fShut1) == fShut0|fShut1 {
		h.stats.Closed++
		h.close(i, false)
		return false
	}
	return true
}

// update changes the epoll events of slot i's sockets to what they need
// now (epoll_ctl only for those that changed).
func (h *Handler) update(i int32) {
	c := &h.conns[i]
	for k := 0; k < 2; k++ {
		ev := c.wanted(k)
		if ev == c.events[k] {
			continue
		}
		if err := h.l.Mod(int(c.sock[k]), ev, ref(i, k, c.sock[k])); err != nil {
			if logging.Debugging() {
				logging.Debugf("TCP splice %d: %v", i, err)
			}
			h.fail(i)
			return
		}
		c.events[k] = ev
	}
}

// fail resets slot i: counted as Refused while connecting, as Reset after.
func (h *Handler) fail(i int32) {
	if h.conns[i].flags&fConnecting != 0 {
		h.stats.Refused++
	} else {
		h.stats.Reset++
	}
	h.close(i, true)
}

// close ends slot i: Unpair if paired, both sockets closed (with SO_LINGER
// 0 if rst, so that both peers see a reset), the pipes closed (a reset's
// may hold bytes) or, after a clean close, empty, given back to the pool.
// The slot is freed at the end of the turn (reap).
func (h *Handler) close(i int32, rst bool) {
	c := &h.conns[i]
	if c.flags&fPaired != 0 {
		h.accel.Unpair(int(c.sock[0]), int(c.sock[1]))
	}
	for k := 0; k < 2; k++ {
		if c.sock[k] < 0 {
			continue
		}
		if rst {
			sys.CloseRST(int(c.sock[k]))
		} else {
			unix.Close(int(c.sock[k]))
		}
		c.sock[k] = -1
	}
	if c.flags&fPipes != 0 {
		if rst || c.pending[0] != 0 || c.pending[1] != 0 || !h.pipes.put(&c.pipes) {
			closePipe(&c.pipes.fd[0])
			closePipe(&c.pipes.fd[1])
		}
	}
	c.flags = fUsed | fClosed
	h.n--
	h.closing = append(h.closing, i)
}
