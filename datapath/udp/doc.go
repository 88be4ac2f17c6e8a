// Package udp translates UDP between the guest's frames and host sockets, in
// both directions and both IP families (addressing.md §6).
//
// # Theory of operation
//
// A flow is one 4-tuple as the guest sees it: the guest's address and port,
// and the peer's address and port as the guest sees them. It has one slot in
// the shared flow table (kind flow.UDP, key slot 0 = that 4-tuple, guest to
// peer, so a guest datagram finds its flow with one hash lookup) and one
// host socket: connected to the translated peer, so the kernel hands it only
// that peer's datagrams and its epoll reference names the flow.
//
//   - Guest to host: the first datagram of a 4-tuple creates the flow. Its
//     socket is bound to -o (or the wildcard) and, where the kernel lets us,
//     to the guest's own source port (SO_REUSEADDR, so several flows from one
//     guest port to different peers coexist, as in the C original), then
//     connected to nat.FromGuest's destination (gateway to host loopback,
//     --dns-forward to the DNS host). The datagrams of a batch are grouped by
//     flow and each flow's run goes out in one sendmmsg, straight from the
//     guest's frames (no copy). Consecutive datagrams of equal size share
//     one message with UDP_SEGMENT (up to 64 of them, 64 KiB), so the host
//     stack routes and delivers one super-datagram and cuts it into the
//     guest's datagrams only at the end; a socket whose kernel or route
//     refuses that sends one datagram per message from then on. The
//     guest's TTL/hop limit is copied to the socket when it changes.
//   - Host to guest: a readable flow socket is read with recvmmsg straight
//     into the payload area of frames reserved from tap.Out; the Ethernet,
//     IP and UDP headers and the checksums are written in front afterwards,
//     so the payload is never copied. When the back end takes offloads (a
//     tap with a virtio-net header), the UDP checksum is left partial (the
//     guest's kernel trusts it on local delivery), and small datagrams are
//     read into a staging area instead and copied, runs of equal size into
//     one GSO_UDP_L4 frame (up to 64 datagrams): one tap write and one trip
//     through the guest's stack for the run, cut into the datagrams at the
//     guest's socket.
//   - Inbound (-u): a listener per forwarded port and address. A datagram
//     from a new peer creates a flow whose reply socket is bound to exactly
//     the local address and port the peer reached (from IP_PKTINFO) and
//     connected to the peer; the kernel prefers that connected socket for
//     the peer's later datagrams, and the guest's replies leave through it,
//     so the peer sees answers from the address it talked to. The guest sees
//     the datagram from nat.ToGuest(peer) at nat.GuestDst, at the rule's
//     target port.
//   - ICMP errors: every flow socket has IP_RECVERR/IPV6_RECVERR on, so an
//     ICMP error for a datagram we sent (port unreachable, fragmentation
//     needed, ...) is queued on the socket's error queue and raises EPOLLERR.
//     We read it with MSG_ERRQUEUE and send the guest the ICMP/ICMPv6 error
//     its own datagram would have caused: the inner IP and UDP headers are
//     rebuilt as the guest sent them, followed by the quoted payload bytes.
//     A guest's datagram to a closed host port therefore makes the guest's
//     socket report "connection refused".
//   - Out of resources: a guest datagram whose flow gets no slot (the
//     table is full) or no socket (the descriptor limit) is answered with
//     an ICMP/ICMPv6 port unreachable quoting it (why that one: refuse),
//     and a host datagram on a forwarded port in the same case is dropped;
//     each episode is logged once (flow.Refusals), and the next datagram
//     of the 4-tuple tries again.
//   - Timeouts follow conntrack: net/netfilter/nf_conntrack_udp_timeout
//     (30 s if absent) and, once the flow is a "stream" (the peer answered and
//     either side sent more than once), nf_conntrack_udp_timeout_stream
//     (120 s), both read once in New. Any datagram either way refreshes a
//     flow; the 1 s tick closes expired ones. Flows are only ever closed from
//     the tick, after the turn's events, so no event of a turn can refer to a
//     flow freed in the same turn.
//
// Nothing on the per-datagram path allocates: message headers, iovecs,
// address and control buffers and the reserved-frame slice are allocated
// once in New.
package udp
