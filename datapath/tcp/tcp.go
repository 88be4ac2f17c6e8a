// Handler, per-connection state, construction, kernel probes, freeing of
// closed connections and the housekeeping tick.

package tcp

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/datapath/config"
	"gopasst/datapath/flow"
	"gopasst/datapath/fwd"
	"gopasst/datapath/guest"
	"gopasst/datapath/logging"
	"gopasst/datapath/loop"
	"gopasst/datapath/sys"
	"gopasst/datapath/tap"
	"gopasst/isolation/allow"
)

// Connection events: what has happened on each side. The state of a
// connection is implied by them (tcp.md §1); ESTABLISHED and the two
// opening events replace all others when set.
const (
	sockAccepted  uint16 = 1 << iota // inbound: host connection accepted, our SYN sent to the guest
	tapSynRcvd                       // outbound: guest SYN seen, connect() under way
	tapSynAckSent                    // outbound: connected, our SYN+ACK sent, waiting for the guest's ACK
	established                      // handshake complete on both sides
	sockFinRcvd                      // the host peer sent FIN (end of its stream)
	sockFinSent                      // we shut the host socket's write side (the guest's FIN)
	tapFinRcvd                       // the guest sent FIN
	tapFinSent                       // we sent FIN to the guest
	tapFinAcked                      // the guest acknowledged our FIN
)

// Connection flags.
const (
	fClosed     uint16 = 1 << iota // done: waiting for the end of the turn to be freed
	fWantOut                       // EPOLLOUT subscribed: waiting for send buffer space
	fDropped                       // guest data was dropped on a short write: duplicate ACKs due with space
	fHostData                      // the socket may hold data not yet sent to the guest
	fKeepalive                     // SO_KEEPALIVE enabled on the host socket
	fSynRetried                    // a handshake segment was retransmitted (RTO base 3 s)
	fSeen                          // guest traffic since the last keepalive scan
	fActive                        // any traffic since the last idle scan
	fWS                            // window scaling negotiated with the guest
	fRewound                       // a fast retransmission was done for the current guest ACK
	fPersist                       // the timer is a zero-window probe, not a retransmission
	fLost                          // guest data up to dropEnd was dropped (short write or past a gap): dupAcks due
	fPeekOff                       // SO_PEEK_OFF is on for the socket (set at the first peek with data in flight)
)

// conn is the per-connection state, indexed by flow.Index. It holds no
// data: bytes to the guest stay in the socket's receive queue until the
// guest acknowledges them, bytes from the guest go to the socket at once
// or are dropped unacknowledged (tcp.md §1).
type conn struct {
	fd     int32
	events uint16
	flags  uint16
	epoll  uint32 // events registered with the loop, 0 if none

	seqToTap       uint32 // next byte to the guest
	seqMax         uint32 // highest seqToTap ever reached (ACKs up to here are valid after a rewind)
	seqAckFromTap  uint32 // highest ACK from the guest
	seqFromTap     uint32 // next byte expected from the guest
	seqAckToTap    uint32 // last ACK sent to the guest
	seqInitFromTap uint32 // guest ISN (+1 if the guest answered our SYN)
	dropEnd        uint32 // with fLost: end of the furthest guest data we dropped
	dupAckSeq      uint32 // with fLost: seqFromTap of the last duplicate ACK burst
	sndFree        uint32 // room in the socket at the last SO_MEMINFO, in payload bytes; 0: ask again (windowAfter)
	sndSince       uint32 // bytes written to the socket since that SO_MEMINFO

	wndFromTap uint32 // guest window in bytes (scaled)
	wndRaw     uint16 // raw window field of the guest's latest ACK
	wndToTap   uint16 // raw window field we last announced
	mss        uint16 // largest payload per frame to the guest
	wsFromTap  uint8
	wsToTap    uint8
	retries    uint8
	v6         bool
}

// Stats counts what the translation did, for tests and --stats.
type Stats struct {
	Opened, Accepted, Refused, Resets, Closed uint64
	ShortWrites, DupAcks, FastRetrans, RTOs   uint64
	FramesOut, BytesOut, BytesIn              uint64
	Peeks, PeekDrained, PeekWindowFull        uint64 // reads towards the guest, and why they stopped
	TableFull                                 uint64 // connections refused (RST either way) for want of a flow slot
	NoFDs                                     uint64 // connections refused (RST either way) for want of a descriptor
}

// Handler translates TCP between the guest and host sockets. It runs on
// the loop's thread only.
type Handler struct {
	cfg     *config.Config
	g       *guest.State
	out     tap.Out
	csumOff bool // out takes partial checksums (and segmentation unless noGSO), see commit
	l       *loop.Loop
	ft      *flow.Table

	conns   []conn
	closing []flow.Index
	active  []flow.Index // flows in use, for the keepalive and idle scans
	actPos  []int32      // flow -> position in active; meaningless if absent
	timerFn func(int32, int64)

	isnKey  isnKey
	peekOff bool // SO_PEEK_OFF works for every enabled family
	infoLen int  // TCP_INFO length the kernel fills in

	mss4, mss6 uint16 // MSS we announce to the guest
	noGSO      bool   // offloads: checksum only, frames of one segment
	vh         tap.VnetHdr

	// Scratch space reused by every call: iovecs and message header for
	// sendmsg/recvmsg, frame buffers, socket option results.
	iov      []unix.Iovec
	msg      unix.Msghdr
	bufs     [][]byte
	mi       [unix.SK_MEMINFO_VARS]uint32
	ti       unix.TCPInfo
	scratch  []byte // peek fallback: bytes already sent land here
	sa       unix.RawSockaddrAny
	key      flow.Key
	lastScan int64
	idleScan int64

	// full and nofd keep the log of refusals for want of a flow slot,
	// or of a descriptor, to a line per episode.
	full, nofd flow.Refusals
	// spare is a descriptor held in reserve while listeners are open,
	// closed to accept and reset connections at the descriptor limit
	// (shed); -1 if none.
	spare int

	listeners []listener
	freeL     []int           // free slots of listeners
	scanned   map[scanKey]int // listeners the port scan opened, by rule and port

	// Set by the engine before Listen (pasta): NSDo runs a function on
	// a thread in pasta's namespace (netns.NS.Do), for the sockets of -T
	// listeners; Splice is the loopback path; Budget limits the
	// descriptors listeners take (nil: no limit).
	NSDo   func(func() error) error
	Splice Splicer
	Budget *fwd.Budget

	// Payload, set by the engine when the guest back end has it
	// (vhost-user), gives the bytes of a guest segment's payload where
	// they are: nil, the frame itself.
	Payload PayloadSource

	Stats Stats
}

// PayloadSource is a guest back end whose frames may leave their payload
// in the guest's memory: the frame handed to the demultiplexer holds
// private copies of the headers, and its payload bytes are read through
// PayloadIovecs (datapath/vhostuser's theory of operation says why).
type PayloadSource interface {
	// PayloadIovecs fills iov (at least 2 entries) with the pieces
	// that hold p, a slice of a frame of the batch being handled, and
	// returns how many it used (1 or 2).
	PayloadIovecs(p []byte, iov []unix.Iovec) int
}

// Limits and constants of the translation (tcp.md §10).
const (
	maxIov        = 1024            // iovecs per sendmsg (guest packets per run)
	framesPerRead = 32              // frames filled by one recvmsg(MSG_PEEK)
	scratchSize   = 1 << 20         // peek fallback scratch buffer
	maxScratchIov = 16              // peek fallback: at most 16 MiB already sent
	initWnd       = 14600           // RFC 6928 initial window, assumed and minimum before ESTABLISHED
	maxWnd        = 16 << 20        // largest window either way
	ourWS         = 8               // window scale we announce
	mssDefault    = 536             // guest MSS when it sends no option (RFC 9293 §3.7.1)
	mssMax4       = 65535 - 20 - 20 // IPv4: largest MSS accepted from the guest (65495, C caps at 65492)
	mssMax6       = 65535 - 40 - 20 // IPv6
	rtoInit       = int64(time.Second)
	rtoSynBase    = 3 * int64(time.Second) // data RTO base after handshake retries (RFC 6298 §5.7)
	rtoMax        = 120 * int64(time.Second)
	maxRetries    = 7
	maxSynRetries = 6
	keepaliveScan = 30 * time.Second
	idleTimeout   = 7200 * time.Second
	// listenBacklog is the -t listeners' backlog: the kernel's default
	// somaxconn, which caps it. At 128, 10,000 connections from the host
	// in a burst overflowed it 96 times, each a connection that waited
	// 1 s for its SYN to be sent again (13.5 s for all, 1.1 s at 4096).
	listenBacklog = 4096
	maxSegOpt     = 32767 // largest TCP_MAXSEG the kernel takes (MAX_TCP_WINDOW)
	estMinSegs    = 4     // windowAfter estimates only from a room of at least this many of our segments
	acceptBatch   = 64    // connections taken per listener event
)

// ErrNoPeekOffset is reported by probes when SO_PEEK_OFF is unusable.
var ErrNoPeekOffset = errors.New("SO_PEEK_OFF not supported for TCP")

// New creates the TCP handler: it registers its descriptor kinds, the
// per-flow timer callback, the housekeeping tick and the end-of-turn hook
// that frees closed flows, and probes kernel features on scratch sockets
// (so it must run before the sandbox).
//
// cfg: the configuration; g: the learned guest addresses; out: frames to
// the guest; l: the event loop; ft: the shared flow table. Returns the
// handler, or an error if a probe socket cannot be made.
func New(cfg *config.Config, g *guest.State, out tap.Out, l *loop.Loop, ft *flow.Table) (*Handler, error) {
	h := &Handler{
		cfg:     cfg,
		g:       g,
		out:     out,
		l:       l,
		ft:      ft,
		conns:   make([]conn, ft.Cap()),
		actPos:  make([]int32, ft.Cap()),
		iov:     make([]unix.Iovec, maxIov+maxScratchIov),
		bufs:    make([][]byte, framesPerRead),
		isnKey:  newISNKey(),
		closing: make([]flow.Index, 0, 256),
		active:  make([]flow.Index, 0, 1024),
		scanned: make(map[scanKey]int),
		full:    flow.Refusals{What: "TCP connections"},
		nofd:    flow.Refusals{What: "TCP connections", Cause: "out of file descriptors (RLIMIT_NOFILE)"},
		spare:   -1,
	}
	// conns and actPos are left as allocated (zero, untouched pages):
	// alloc sets a slot's entry before any use, so only the slots up to
	// the peak number of connections ever cost memory (datapath/flow).
	if o := out.Offloads(); o.Csum || o.TSO {
		h.csumOff = true
		h.noGSO = !o.TSO
	}
	h.msg.Iov = &h.iov[0]
	mtu := cfg.MTU
	if mtu <= 0 || mtu > config.MaxMTU {
		mtu = config.DefaultMTU
	}
	h.mss4 = ourMSS(mtu - 40)
	h.mss6 = ourMSS(mtu - 60)
	if err := h.probe(); err != nil {
		return nil, err
	}
	if !h.peekOff {
		h.scratch = make([]byte, scratchSize)
	}
	h.timerFn = h.onTimer
	l.Handle(loop.KindTCP, h.sockEvent)
	l.Handle(loop.KindTCPListen, h.listenEvent)
	l.OnTurnEnd(h.reap)
	l.Every(time.Second, h.tick)
	return h, nil
}

// ourMSS returns the MSS announced to the guest for a maximum payload of
// max bytes: rounded down to a whole number of pages above a page, so that
// the host socket's buffers fill in page units (tcp.md §2).
func ourMSS(max int) uint16 {
	if max > 65535 {
		max = 65535
	}
	if max > 4096 {
		max &^= 4095
	}
	if max < mssDefault {
		max = mssDefault
	}
	return uint16(max)
}

// probe tests SO_PEEK_OFF and the TCP_INFO length on scratch sockets of
// every enabled family (SO_PEEK_OFF reached TCP over IPv4 first, in 6.9:
// use it only if all families have it).
func (h *Handler) probe() error {
	h.peekOff = true
	fams := []int{}
	if h.cfg.V4.Enabled || !h.cfg.V6.Enabled {
		fams = append(fams, unix.AF_INET)
	}
	if h.cfg.V6.Enabled {
		fams = append(fams, unix.AF_INET6)
	}
	for _, af := range fams {
		fd, err := unix.Socket(af, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			if af == unix.AF_INET6 && errors.Is(err, unix.EAFNOSUPPORT) {
				continue
			}
			return fmt.Errorf("tcp: probe socket: %w", err)
		}
		if e := sys.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0); e != 0 {
			h.peekOff = false
		}
		if n, e := sys.TCPInfo(fd, &h.ti); e == 0 {
			h.infoLen = n
		}
		unix.Close(fd)
	}
	if !h.peekOff {
		logging.Infof("tcp: %v, peeking past sent data with a scratch buffer", ErrNoPeekOffset)
	}
	return nil
}

// Conns returns the number of connections in use.
func (h *Handler) Conns() int { return len(h.active) }

// alloc takes a flow slot for a new connection and binds its guest-side
// key. A full table is counted and logged (once per episode, see
// flow.Refusals); the caller answers it. Returns the index, or an error if
// the table is full (flow.ErrFull) or the key is in use.
func (h *Handler) alloc(k *flow.Key) (flow.Index, error) {
	i, err := h.ft.Alloc(flow.TCP)
	if err != nil {
		if errors.Is(err, flow.ErrFull) {
			h.Stats.TableFull++
			h.full.Refuse(h.l.Now(), h.ft)
		}
		return flow.None, err
	}
	h.full.Admitted()
	if err := h.ft.Bind(i, 0, k); err != nil {
		h.ft.Free(i)
		return flow.None, err
	}
	h.conns[i] = conn{fd: -1}
	h.actPos[i] = int32(len(h.active))
	h.active = append(h.active, i)
	return i, nil
}

// release frees the slot of connection i at once and forgets it: the
// inverse of alloc, for reap, and for a connection whose set-up failed
// before anything else (socket, epoll, timer, guest) learnt of its slot,
// which alone makes freeing it within the turn safe.
func (h *Handler) release(i flow.Index) {
	p := h.actPos[i]
	last := h.active[len(h.active)-1]
	h.active[p] = last
	h.actPos[last] = p
	h.active = h.active[:len(h.active)-1]
	h.actPos[i] = -1
	h.ft.Free(i)
	h.conns[i] = conn{fd: -1}
}

var _ = allow.Syscall(allow.Both, "close", "tcp: closing the socket of an ended connection (Handler.closeConn)")

// closeConn ends connection i: the guest-side key stops matching at once,
// the socket is closed (with a reset if rst) and the slot freed at the end
// of the turn, so that later events of this turn find it marked closed.
func (h *Handler) closeConn(i flow.Index, rst bool) {
	c := &h.conns[i]
	if c.flags&fClosed != 0 {
		return
	}
	c.flags |= fClosed
	h.ft.Unbind(i, 0)
	h.l.Timers().Cancel(int32(i))
	if c.fd >= 0 {
		if rst {
			sys.CloseRST(int(c.fd))
		} else {
			unix.Close(int(c.fd))
		}
		c.fd = -1
	}
	h.Stats.Closed++
	h.closing = append(h.closing, i)
}

// reset sends RST to the guest (if it knows the connection) and resets the
// host side.
func (h *Handler) reset(i flow.Index) {
	c := &h.conns[i]
	if c.flags&fClosed != 0 {
		return
	}
	// RST+ACK at our current sequence: a guest still in SYN-SENT takes
	// it because its ACK covers the guest's SYN (RFC 9293 §3.10.7.3).
	h.ctrl(i, flagRST|flagACK)
	h.Stats.Resets++
	h.closeConn(i, true)
}

// resetDead sends RST to the guest for connection i, whose host socket
// the kernel has closed already (reset by the peer, timed out), and
// closes the socket without SO_LINGER: on a closed socket it would change
// nothing and cost a system call.
func (h *Handler) resetDead(i flow.Index) {
	if h.conns[i].flags&fClosed != 0 {
		return
	}
	h.ctrl(i, flagRST|flagACK)
	h.Stats.Resets++
	h.closeConn(i, false)
}

// reap frees the slots of connections closed during the turn (the only
// place slots are freed, see loop's theory of operation).
func (h *Handler) reap() {
	for _, i := range h.closing {
		h.release(i)
	}
	h.closing = h.closing[:0]
}

// tick runs the keepalive scan every 30 s and the idle scan every 2 h
// (tcp.md §6).
func (h *Handler) tick(now int64) {
	if now-h.lastScan >= int64(keepaliveScan) {
		h.lastScan = now
		for _, i := range h.active {
			c := &h.conns[i]
			if c.flags&fClosed != 0 || c.events&established == 0 {
				continue
			}
			if c.flags&fSeen == 0 {
				// An ACK below what the guest has seen: a live guest
				// answers with an ACK, one that forgot us with RST.
				h.ctrlSeq(i, flagACK, c.seqToTap-1)
			}
			c.flags &^= fSeen
		}
	}
	if now-h.idleScan >= int64(idleTimeout) {
		h.idleScan = now
		for k := 0; k < len(h.active); k++ {
			i := h.active[k]
			c := &h.conns[i]
			if c.flags&fClosed != 0 {
				continue
			}
			if c.flags&fActive == 0 {
				logging.Debugf("tcp: flow %d idle, resetting", i)
				h.reset(i)
				continue
			}
			c.flags &^= fActive
		}
	}
}
