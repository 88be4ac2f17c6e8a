// The UDP handler: flow state, guest-to-host path, flow creation, timeouts.
package udp

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"gopasst/batch"
	"gopasst/datapath/config"
	"gopasst/datapath/flow"
	"gopasst/datapath/fwd"
	"gopasst/datapath/guest"
	"gopasst/datapath/header"
	"gopasst/datapath/logging"
	"gopasst/datapath/loop"
	"gopasst/datapath/nat"
	"gopasst/datapath/packet"
	"gopasst/datapath/sys"
	"gopasst/datapath/tap"
)

const (
	// Batch is how many guest datagrams FromGuest handles per chunk (the
	// demultiplexer's batch size; larger calls are cut into chunks).
	Batch = 128
	// recvBatch is how many host datagrams one recvmmsg reads, as the C
	// original's UDP_MAX_FRAMES.
	recvBatch = 32
	// maxRounds bounds the recvmmsg calls per readiness event, so that one
	// busy socket cannot starve the others; epoll is level-triggered and
	// reports the rest next turn.
	maxRounds = 8
	// maxErrors bounds the error queue messages read per EPOLLERR.
	maxErrors = 16

	// Conntrack's defaults, used when the sysctls cannot be read.
	defaultTimeout       = 30 * time.Second
	defaultStreamTimeout = 120 * time.Second

	ttlOut = 255 // TTL/hop limit of every packet we send the guest
)

// Header lengths in front of a UDP payload in a frame to the guest.
const (
	hdr4 = header.EthernetLen + header.IPv4MinLen + header.UDPLen // 42
	hdr6 = header.EthernetLen + header.IPv6Len + header.UDPLen    // 62
)

// endpoints are a flow's addresses as the guest sees them. Addresses are
// 16 bytes, IPv4 in IPv4-mapped form, as in flow.Key.
type endpoints struct {
	v6                  bool
	guest, peer         [16]byte // the guest's address; the peer's address as the guest sees it
	guestPort, peerPort uint16
}

// udpFlow is the state of one UDP flow, indexed by its flow.Index.
type udpFlow struct {
	ep       endpoints
	host     [16]byte // the peer's real (host-side) address
	hostPort uint16
	fd       int32
	// via: fd is the listener's, not the flow's (replySocket): not
	// ours to close or watch, and sends name the peer (viaName).
	via, via6 bool  // via6: the lent listener is IPv6 (dual-stack)
	inbound   bool  // created by a datagram on a listener (the peer started)
	ttl       uint8 // TTL/hop limit set on the socket, as the guest's last datagram
	// guestSent, hostSent count datagrams each way, saturating at 2: enough
	// to tell conntrack's "stream" state.
	guestSent, hostSent uint8
	noGSO               bool  // the socket refused UDP_SEGMENT: one datagram per message
	inSize              int32 // payload length of the last datagram from the host
	last                int64 // loop time of the last datagram either way
	pos                 int32 // index in Handler.active
}

// stream reports whether f is in conntrack's "assured" state: the side
// that did not start the flow has sent, and one side has sent more than
// one datagram.
func (f *udpFlow) stream() bool {
	answered := f.hostSent > 0
	if f.inbound {
		answered = f.guestSent > 0
	}
	return answered && (f.guestSent > 1 || f.hostSent > 1)
}

func inc(c *uint8) {
	if *c < 2 {
		*c++
	}
}

// Stats counts what the handler did, for logs and tests.
type Stats struct {
	FlowsCreated, FlowsClosed uint64
	FlowFailures              uint64 // datagrams dropped because no flow could be made
	TableFull                 uint64 // of those, for want of a flow slot (the guest's got an ICMP error)
	NoFDs                     uint64 // of those, for want of a descriptor (the guest's got an ICMP error)
	ToHost, ToHostDropped     uint64 // guest datagrams sent / dropped
	ToHostGSO                 uint64 // messages that carried several of them (UDP_SEGMENT)
	ToGuest, ToGuestDropped   uint64 // host datagrams queued to the guest / dropped
	ToGuestGSO                uint64 // frames that carried several of them (GSO_UDP_L4)
	ICMPErrors                uint64 // ICMP errors relayed to the guest
	BadErrQueue               uint64 // unparsable error queue messages

	// The loopback path (pasta): flows, datagrams moved, dropped.
	SplicesCreated, SplicesClosed uint64
	Spliced, SpliceDropped        uint64
}

// Handler is the UDP translator. Everything runs on the loop's thread.
type Handler struct {
	cfg *config.Config
	g   *guest.State
	out tap.Out
	l   *loop.Loop
	ft  *flow.Table

	flows  []udpFlow
	active []flow.Index // flows checked by the tick

	// privWarned: the warning that replies from a port below 1024
	// cannot be sent was given (replySocket).
	privWarned bool
	// full and nofd keep the log of flows refused for want of a slot,
	// or of a descriptor, to a line per episode.
	full, nofd flow.Refusals
	// viaSA is the peer's name for sends on a lent listener (viaName).
	viaSA unix.RawSockaddrInet6

	timeout, streamTimeout int64 // ns
	bufForce               bool  // SO_*BUFFORCE still worth trying

	// guest to host
	idx []flow.Index
	run [][]byte // payloads of the flow being sent
	gso gsoMsgs

	// host to guest
	recv    *batch.Msgs // flow sockets: payload and source address
	lrecv   *batch.Msgs // listeners: also PKTINFO control
	ctrl    []byte      // lrecv's control buffers, ctrlLen each
	frames  [][]byte
	sink    [1]byte // where dropWaiting reads datagrams into (truncated)
	eq      errQueue
	csumOff bool        // out takes partial checksums (and GSO_UDP_L4 frames if stage is set)
	vh      tap.VnetHdr // commit's header, kept here so it does not escape
	stage   *stage      // flow sockets, coalescing into GSO frames; nil without GSO

	listeners []listener
	freeL     []int           // free slots of listeners
	scanned   map[scanKey]int // listeners the port scan opened, by rule and port
	groupEP   endpoints       // endpoints of a broadcast/multicast datagram (no flow)

	// The loopback path (splice.go): flows between two sockets, no
	// frames; made at the first of them.
	splices []spliceFlow
	sactive []flow.Index
	sp      *spliceBufs

	// Set by the engine before Listen (pasta): NSDo runs a function on
	// a thread in pasta's namespace (netns.NS.Do), for the sockets made
	// there; Budget limits the descriptors listeners take (nil: no
	// limit).
	NSDo   func(func() error) error
	Budget *fwd.Budget

	Stats Stats
}

// ctrlLen is the control buffer per datagram on listeners: room for
// IPV6_PKTINFO or IP_PKTINFO with a spare header.
const ctrlLen = 64

// New creates the UDP handler, registers its descriptor kinds (loop.KindUDP,
// loop.KindUDPListen) and its 1 s tick with l, and reads the conntrack
// timeouts (call it before the sandbox hides /proc, or the defaults apply).
//
// cfg, g: configuration and learned guest addressing; out: frames towards
// the guest; l: the event loop; ft: the shared flow table. Returns the
// handler.
func New(cfg *config.Config, g *guest.State, out tap.Out, l *loop.Loop, ft *flow.Table) (*Handler, error) {
	h := &Handler{
		cfg: cfg, g: g, out: out, l: l, ft: ft,
		flows:    make([]udpFlow, ft.Cap()),
		bufForce: true,
		idx:      make([]flow.Index, Batch),
		run:      make([][]byte, Batch),
		gso:      newGSOMsgs(Batch),
		recv:     batch.NewMsgs(recvBatch, 1),
		lrecv:    batch.NewMsgs(recvBatch, 1),
		ctrl:     make([]byte, recvBatch*ctrlLen),
		frames:   make([][]byte, recvBatch),
		scanned:  make(map[scanKey]int),
		full:     flow.Refusals{What: "UDP flows"},
		nofd:     flow.Refusals{What: "UDP flows", Cause: "out of file descriptors (RLIMIT_NOFILE)"},
	}
	if o := out.Offloads(); o.Csum || o.USO {
		h.csumOff = true
		if o.USO {
			h.stage = newStage()
		}
	}
	h.recv.WithNames()
	h.lrecv.WithNames()
	for j := range h.lrecv.Hdrs {
		setControl(&h.lrecv.Hdrs[j].Hdr, h.ctrl[j*ctrlLen:(j+1)*ctrlLen])
	}
	h.timeout = int64(readTimeout("/proc/sys/net/netfilter/nf_conntrack_udp_timeout", defaultTimeout))
	h.streamTimeout = int64(readTimeout("/proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream", defaultStreamTimeout))
	l.Handle(loop.KindUDP, h.sockEvent)
	l.Handle(loop.KindUDPListen, h.listenEvent)
	l.Handle(loop.KindUDPSplice, h.spliceEvent)
	l.Every(time.Second, h.tick)
	return h, nil
}

// readTimeout reads a conntrack timeout sysctl (whole seconds).
//
// path: the file; def: the value if it is missing or malformed. Returns the
// timeout.
func readTimeout(path string, def time.Duration) time.Duration {
	b, err := os.ReadFile(path)
	if err != nil {
		return def
	}
	s, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || s <= 0 {
		return def
	}
	return time.Duration(s) * time.Second
}

// Timeouts returns the flow timeouts in use: before and after a flow
// becomes a stream.
func (h *Handler) Timeouts() (single, stream time.Duration) {
	return time.Duration(h.timeout), time.Duration(h.streamTimeout)
}

// Flows returns how many UDP flows are open.
func (h *Handler) Flows() int { return len(h.active) }

// FromGuest sends the guest's UDP datagrams to their host sockets, creating
// flows for new 4-tuples. Datagrams of one flow in pkts leave in one
// sendmmsg, in their order, runs of equal size as UDP_SEGMENT messages.
//
// pkts: validated UDP packets from the demultiplexer, valid until return.
func (h *Handler) FromGuest(pkts []packet.Packet) {
	for len(pkts) > 0 {
		n := min(len(pkts), Batch)
		h.fromGuest(pkts[:n])
		pkts = pkts[n:]
	}
}

// fromGuest handles at most Batch packets (see FromGuest).
func (h *Handler) fromGuest(pkts []packet.Packet) {
	now := h.l.Now()
	idx := h.idx[:len(pkts)]
	for k := range pkts {
		p := &pkts[k]
		if p.L4 < 0 || p.L4Len < header.UDPLen || p.L4+p.L4Len > len(p.Frame) || p.Proto != header.ProtoUDP {
			idx[k] = flow.None // not what the demultiplexer promises
			h.Stats.ToHostDropped++
			continue
		}
		idx[k] = h.flowOf(p)
	}
	// Gather each flow's packets in order (at most Batch² comparisons, no
	// allocation), send them with one sendmmsg.
	run := h.run
	for k := range pkts {
		i := idx[k]
		if i == flow.None {
			continue
		}
		f := &h.flows[i]
		n := 0
		for j := k; j < len(pkts); j++ {
			if idx[j] != i {
				continue
			}
			idx[j] = flow.None
			p := &pkts[j]
			u, err := header.ParseUDP(p.L4Bytes())
			if err != nil {
				h.Stats.ToHostDropped++
				continue
			}
			if p.TTL != f.ttl {
				// The socket's TTL applies to what is sent
				// after the change: send what came before.
				h.sendRun(f, run[:n])
				n = 0
				h.setTTL(f, p.TTL)
			}
			run[n] = u.Payload()
			n++
			inc(&f.guestSent)
		}
		h.sendRun(f, run[:n])
		clear(run[:n]) // drop references to the guest's frames
		f.last = now
	}
}

// sendRun sends run, the payloads of f's datagrams in order, on f's
// socket: as UDP_SEGMENT messages where the sizes allow (see gsoMsgs.build),
// all in one sendmmsg unless the kernel stops early.
//
// A send can fail because of an earlier datagram: a connected UDP socket
// reports a pending ICMP error (ECONNREFUSED, EHOSTUNREACH, ...) on the next
// send, which then is not sent. That message is tried once more. A
// UDP_SEGMENT message the kernel refuses (gsoRefused) is sent again one
// datagram per message, as is everything after it on this flow. Any other
// failure drops the message (or the rest, when the socket buffer is full).
func (h *Handler) sendRun(f *udpFlow, run [][]byte) {
	g := &h.gso
	maxSegs := gsoMaxSegs
	if f.noGSO {
		maxSegs = 1
	}
	n := g.build(run, maxSegs)
	sent, retried := 0, false
	for sent < n {
		if f.via {
			// Named each round: a rebuild (noGSO) makes new headers.
			h.viaName(g.hdrs[sent:n], netip.AddrFrom16(f.host), f.hostPort, f.via6)
		}
		m, err := sys.Sendmmsg(int(f.fd), g.hdrs[sent:n], unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		if f.via {
			clearNames(g.hdrs[sent:n])
		}
		if err == 0 {
			h.Stats.ToHost += g.count(sent, sent+m)
			for k := sent; k < sent+m; k++ {
				if g.segs[k] > 1 {
					h.Stats.ToHostGSO++
				}
			}
			sent += m
			continue
		}
		switch {
		case err == unix.EAGAIN || err == unix.ENOBUFS:
			h.Stats.ToHostDropped += g.count(sent, n)
			return
		case !retried && asyncError(err):
			retried = true
		case g.segs[sent] > 1 && gsoRefused(err):
			f.noGSO = true
			run = run[g.first[sent]:]
			n, sent = g.build(run, 1), 0
		default:
			h.Stats.ToHostDropped += uint64(g.segs[sent])
			sent++
			retried = false
		}
	}
}

// asyncError reports whether a send error is a socket error left by an
// earlier ICMP error rather than a problem with the message being sent.
func asyncError(err unix.Errno) bool {
	switch err {
	case unix.ECONNREFUSED, unix.EHOSTUNREACH, unix.ENETUNREACH, unix.EHOSTDOWN,
		unix.ENETDOWN, unix.EPROTO, unix.ENOPROTOOPT, unix.EMSGSIZE:
		return true
	}
	return false
}

// setTTL copies the guest's TTL or hop limit to f's socket.
func (h *Handler) setTTL(f *udpFlow, ttl uint8) {
	f.ttl = ttl
	if ttl == 0 || f.via {
		// 0: not valid on a socket; a lent listener's TTL is not the
		// flow's to change.
		return
	}
	if f.ep.v6 {
		unix.SetsockoptInt(int(f.fd), unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, int(ttl))
	} else {
		unix.SetsockoptInt(int(f.fd), unix.IPPROTO_IP, unix.IP_TTL, int(ttl))
	}
}

// flowOf returns the flow of guest packet p, creating it if needed, or
// flow.None if the packet is to be dropped.
func (h *Handler) flowOf(p *packet.Packet) flow.Index {
	key := flow.MakeKey(header.ProtoUDP, p.Src, p.SrcPort, p.Dst, p.DstPort)
	if i, ok := h.ft.Lookup(&key); ok {
		if h.ft.Kind(i) == flow.UDP {
			return i
		}
		return flow.None
	}
	i, err := h.newFlow(p, &key)
	switch {
	case err == nil:
	case errors.Is(err, flow.ErrFull):
		h.Stats.FlowFailures++
		h.Stats.TableFull++
		h.refuse(p, &h.full)
		return flow.None
	case errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE):
		// No descriptor for the flow's socket: to the guest the same
		// as a full table.
		h.Stats.FlowFailures++
		h.Stats.NoFDs++
		h.refuse(p, &h.nofd)
		return flow.None
	default:
		h.Stats.FlowFailures++
		if logging.Debugging() {
			logging.Debugf("UDP flow %v:%d -> %v:%d: %v", p.Src, p.SrcPort, p.Dst, p.DstPort, err)
		}
		return flow.None
	}
	return i
}

// refuse answers guest datagram p, for which the table had no slot or the
// process no descriptor, with an ICMP or ICMPv6 port unreachable from the
// address it was sent to, and logs the refusal through r (once per
// episode, see flow.Refusals).
//
// Why port unreachable, and not "administratively prohibited" (ICMPv4 code
// 13, ICMPv6 code 1) or silence (the C original drops the datagram):
// from the guest's side no socket could take the datagram, which is what
// Linux itself answers with port unreachable (__udp4_lib_rcv,
// __udp6_lib_rcv), and what iptables' REJECT sends by default. Linux
// reports it to a connected socket as ECONNREFUSED, which resolvers and
// other UDP clients already treat as "try the next server or later",
// while admin-prohibited becomes EHOSTUNREACH (IPv4) or EACCES (IPv6),
// which applications take as a routing or permission fault. Silence would
// leave the guest to its own timeouts (seconds for a DNS query) with the
// table possibly full for as long. A later datagram of the same 4-tuple
// tries again, and gets through once a flow times out and frees a slot.
func (h *Handler) refuse(p *packet.Packet, r *flow.Refusals) {
	r.Refuse(h.l.Now(), h.ft)
	u, err := header.ParseUDP(p.L4Bytes())
	if err != nil {
		return
	}
	ep := endpoints{v6: p.V6, guest: p.Src.As16(), peer: p.Dst.As16(), guestPort: p.SrcPort, peerPort: p.DstPort}
	typ, code := header.ICMPv4DestUnreach, header.ICMPv4CodePortUnreach
	if p.V6 {
		typ, code = header.ICMPv6DestUnreach, header.ICMPv6CodePortUnreach
	}
	h.icmpError(&ep, p.TTL, &ep.peer, typ, code, 0, u.Payload())
}

var errNoRoute = errors.New("destination not reachable from the guest")

// newFlow creates the flow and host socket for a guest packet with a new
// 4-tuple (see the package doc).
//
// p: the packet; key: its flow key. Returns the new flow or an error.
func (h *Handler) newFlow(p *packet.Packet, key *flow.Key) (flow.Index, error) {
	if p.Src.IsUnspecified() || p.Src.IsMulticast() || p.SrcPort == 0 || p.DstPort == 0 {
		return flow.None, errNoRoute
	}
	ini := nat.Side{Pif: nat.PifTap, Src: p.Src, Dst: p.Dst, SrcPort: p.SrcPort, DstPort: p.DstPort}
	tgt := nat.Target(h.cfg, h.g, header.ProtoUDP, &ini, nil)
	if tgt.Pif != nat.PifHost {
		return flow.None, errNoRoute
	}
	dst, local, ifname, scope := tgt.Dst, tgt.Src, tgt.Dev, tgt.Scope
	i, err := h.ft.Alloc(flow.UDP)
	if err != nil {
		return flow.None, err
	}
	h.full.Admitted()
	fd, err := h.openFlowSocket(p.V6, local, p.SrcPort, ifname, dst, p.DstPort, scope, true, false)
	if err != nil {
		h.ft.Free(i)
		return flow.None, err
	}
	h.nofd.Admitted()
	f := &h.flows[i]
	*f = udpFlow{
		ep: endpoints{
			v6: p.V6, guest: p.Src.As16(), peer: p.Dst.As16(),
			guestPort: p.SrcPort, peerPort: p.DstPort,
		},
		host: dst.As16(), hostPort: p.DstPort,
		fd: int32(fd),
	}
	h.setTTL(f, p.TTL)
	if err := h.register(i, key); err != nil {
		return flow.None, err
	}
	return i, nil
}

// openFlowSocket creates a flow's socket, binds and connects it.
//
// v6: family; local, port: where to bind; ifname: device to bind to ("" for
// none); dst, dport, scope: the peer; anyPort: fall back to an ephemeral
// port if port cannot be bound; ns: make it in pasta's namespace. Returns
// the descriptor or an error.
func (h *Handler) openFlowSocket(v6 bool, local netip.Addr, port uint16, ifname string,
	dst netip.Addr, dport uint16, scope uint32, anyPort, ns bool) (int, error) {
	fd, err := h.newSocket(v6, false, ns)
	if err != nil {
		return -1, err
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("%s: %w", what, err)
	}
	if err := bindDevice(fd, ifname); err != nil {
		return fail("bind device", err)
	}
	lscope := uint32(0)
	if local.Is6() && local.IsLinkLocalUnicast() {
		lscope = scope
	}
	err = unix.Bind(fd, sockaddr(local, port, lscope, v6))
	if err != nil && anyPort && errRetryable(err) {
		// The guest's port is taken on the host (by a socket without
		// SO_REUSEADDR) or privileged: any port will do for the peer,
		// but one that no socket holds. With SO_REUSEADDR on, bind(0)
		// counts a port held by sockets that also have it (every flow
		// socket of ours) as free, and a second socket connected to
		// the same peer from the same port is the same 4-tuple: the
		// kernel hands the peer's answers to both flows to one of
		// them (seen in TestPastaScaleUDP, 10,000 flows to one
		// server). Off, the port is ours alone; a later flow from the
		// guest port of that number finds it taken and comes here.
		err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 0)
		if err == nil {
			err = unix.Bind(fd, sockaddr(local, 0, lscope, v6))
		}
	}
	if err != nil {
		return fail("bind", err)
	}
	if err := unix.Connect(fd, sockaddr(dst, dport, scope, v6)); err != nil {
		return fail("connect", err)
	}
	return fd, nil
}

// replySocket opens the socket that answers a host peer from the local
// address and port the peer reached on listener ln (openFlowSocket with
// the port kept), in pasta's namespace if ln.ns. A listener of a port
// below 1024 was bound by the supervisor at set-up, and the sandboxed
// process may not bind that port again for a flow (EACCES): then the flow
// answers through the listener itself (via true), with the peer named in
// every send, as the C original does for all of its flows. A listener of
// the port scan is never lent (it may close while the flow lives); that
// case is said once, at warning level, since those datagrams are dropped.
//
// Returns the descriptor, whether it is the listener's, or the error.
func (h *Handler) replySocket(ln *listener, v6 bool, local netip.Addr, peer netip.Addr, pport uint16, scope uint32) (int, bool, error) {
	fd, err := h.openFlowSocket(v6, local, ln.port, ln.ifname, peer, pport, scope, false, ln.ns)
	if !errors.Is(err, unix.EACCES) {
		return fd, false, err
	}
	if !ln.scan {
		return ln.fd, true, nil
	}
	if !h.privWarned {
		h.privWarned = true
		logging.Warnf("UDP port %d: answers must come from this port, which the sandboxed process may not bind (a port below 1024): datagrams to it are dropped", ln.port)
	}
	return -1, false, err
}

// viaName points the first n messages of hdrs at the name of peer:port
// (in h.viaSA, IPv4 peers mapped when the listener is IPv6), for sends on
// a listener lent to a flow (replySocket); clearNames undoes it.
func (h *Handler) viaName(hdrs []unix.Mmsghdr, peer netip.Addr, port uint16, v6 bool) {
	l := setName(&h.viaSA, peer, port, v6)
	for k := range hdrs {
		hdrs[k].Hdr.Name = (*byte)(unsafe.Pointer(&h.viaSA))
		hdrs[k].Hdr.Namelen = l
	}
}

// clearNames removes the names viaName set.
func clearNames(hdrs []unix.Mmsghdr) {
	for k := range hdrs {
		hdrs[k].Hdr.Name, hdrs[k].Hdr.Namelen = nil, 0
	}
}

// register hooks a new flow with its socket open into the flow table (key
// slot 0), the loop and the active list. On failure the flow is closed.
func (h *Handler) register(i flow.Index, key *flow.Key) error {
	f := &h.flows[i]
	f.last = h.l.Now()
	f.pos = int32(len(h.active))
	h.active = append(h.active, i)
	h.Stats.FlowsCreated++
	if err := h.ft.Bind(i, 0, key); err != nil {
		h.close(i)
		return err
	}
	if f.via {
		// The listener is watched already: the peer's datagrams come
		// through it and find the flow by its key.
	} else if err := h.l.Add(int(f.fd), unix.EPOLLIN, loop.MakeRef(loop.KindUDP, int(f.fd), uint32(i))); err != nil {
		h.close(i)
		return err
	}
	if logging.Debugging() {
		logging.Debugf("UDP flow %d: [%v]:%d <-> [%v]:%d (host [%v]:%d)", i,
			netip.AddrFrom16(f.ep.guest).Unmap(), f.ep.guestPort,
			netip.AddrFrom16(f.ep.peer).Unmap(), f.ep.peerPort,
			netip.AddrFrom16(f.host).Unmap(), f.hostPort)
	}
	return nil
}

// close closes flow i's socket and frees its slot.
func (h *Handler) close(i flow.Index) {
	f := &h.flows[i]
	if !f.via {
		unix.Close(int(f.fd))
	}
	f.fd, f.via = -1, false
	last := h.active[len(h.active)-1]
	h.active[f.pos] = last
	h.flows[last].pos = f.pos
	h.active = h.active[:len(h.active)-1]
	h.ft.Free(i)
	h.Stats.FlowsClosed++
}

// tick closes the flows whose conntrack-like timeout expired.
//
// now: the loop time.
func (h *Handler) tick(now int64) {
	h.tickSplices(now)
	// Backwards: close moves the last active flow into the hole, and that
	// one has been looked at already.
	for k := len(h.active) - 1; k >= 0; k-- {
		if k >= len(h.active) {
			continue
		}
		i := h.active[k]
		f := &h.flows[i]
		to := h.timeout
		if f.stream() {
			to = h.streamTimeout
		}
		if now-f.last >= to {
			if logging.Debugging() {
				logging.Debugf("UDP flow %d: timed out", i)
			}
			h.close(i)
		}
	}
}

// Close closes every flow and listener (for tests and orderly shutdown).
func (h *Handler) Close() {
	for len(h.active) > 0 {
		h.close(h.active[len(h.active)-1])
	}
	for len(h.sactive) > 0 {
		h.closeSplice(h.sactive[len(h.sactive)-1])
	}
	for k := range h.listeners {
		h.closeListener(k)
	}
}
