// Package tcp is gopasst's TCP translation for both modes: guest TCP
// segments on one side, host TCP sockets on the other, with no TCP stack
// and no data buffers of our own (tcp.md).
//
// # Theory of operation
//
// A guest SYN becomes a non-blocking connect() from the host (to the
// address datapath/nat maps the destination to); the guest gets SYN+ACK
// only once the connect succeeds, RST if it fails. A connection accepted
// on a forwarded port becomes a SYN to the guest. From then on the kernel's
// socket buffers hold all the data and we only map sequence numbers,
// windows and acknowledgements between the two:
//
//   - Host to guest: data stays in the socket's receive queue until the
//     guest acknowledges it. One recvmsg(MSG_PEEK) at the socket's peek
//     offset (SO_PEEK_OFF, turned on at the first peek with data in
//     flight: before that a peek starts at the head anyway) fills the payload areas of up to 32 frames of
//     the guest queue, whose headers are then written in place and
//     checksummed once (checksum package, pseudo-header included). A
//     guest ACK drops the acknowledged bytes with recv(MSG_TRUNC); a
//     duplicate ACK or a retransmission timeout rewinds to the guest's
//     ACK and peeks again from there (go-back-N). We send no more than
//     the guest's window, in segments of its MSS.
//   - Guest to host: the demultiplexer hands us every TCP packet of a
//     batch; consecutive packets of one connection form a run, whose
//     in-order payload (reordered within the run) goes to the socket in
//     one sendmsg with an iovec over the frames, and which is answered by
//     one ACK. The window we offer is the socket's free send buffer as the
//     kernel accounts it (SO_MEMINFO, converted to payload with the skb
//     overhead SIOCOUTQ reveals), so that what the guest sends within it
//     is taken whole: a short write is the exception, not the flow
//     control. Between queries, while the bytes written since are a
//     small part of the room the last one showed, the window is that room
//     less those bytes (its right edge unmoved): a request or a response
//     costs no query. When the socket is short of space we subscribe EPOLLOUT
//     (which also marks the socket SOCK_NOSPACE, letting send buffer
//     autotuning grow it) and re-announce the window as soon as it opens;
//     if a write was short anyway, the unwritten bytes are dropped
//     unacknowledged and, once there is room, the guest gets a window
//     update and three duplicate ACKs, so that it retransmits at once
//     instead of waiting for its retransmission timeout; and so does
//     every later ACK still short of the data we dropped (segments past
//     the hole are dropped too, and the guest's NewReno recovery ends
//     before it has resent those).
//   - Tap offloads (datapath/tap: IFF_VNET_HDR, TUNSETOFFLOAD with
//     checksum and TCP segmentation offload): the guest's kernel hands us
//     TCP super-frames of up to 64 KiB with partial checksums whatever
//     its MTU, which we write to the socket as they are (we never check a
//     guest checksum: the payload goes to a socket); towards the guest a
//     frame carries as many whole segments of the guest's MSS as fit in
//     64 KiB, with a virtio-net header asking for GSO (gso_size = MSS)
//     and a partial checksum (the pseudo-header sum, which the guest's
//     kernel trusts on local delivery), so neither side sums the payload.
//     Without offloads (tap.OffloadEnv=off, a capture running, a back end
//     without them) frames are MSS-sized and fully checksummed.
//   - Sockets are edge-triggered: unacknowledged data keeps a socket
//     readable, so level-triggered it would wake the loop for ever. A
//     connection that stopped because the guest's window is full is
//     resumed by the guest's next ACK, not by epoll.
//   - FIN and RST cross in both directions; a host FIN is passed on only
//     once every byte before it is acknowledged. Once both FINs are
//     acknowledged the socket is closed (the kernel keeps any TIME_WAIT)
//     and the flow slot freed at the end of the loop turn.
//   - One timer per connection (the loop's timer heap, keyed by flow
//     index) serves handshake retries, retransmission with exponential
//     backoff (1 s doubling, at most 7 retries, then reset) and
//     zero-window probes; a 1 s tick sends keepalive probes to quiet
//     connections every 30 s and resets connections idle for 2 h.
//   - Initial sequence numbers are SipHash-2-4 of the 4-tuple under a
//     per-process key plus a 32 ns clock (RFC 6528).
//   - Out of resources: a guest SYN that gets no flow slot (the table is
//     full) or no socket (the descriptor limit) is answered with RST+ACK
//     at once, so the guest's connect() fails instead of retrying for two
//     minutes; a connection accepted on a forwarded port that gets no slot
//     is reset. A listener whose accept fails for want of a descriptor
//     gives up a spare one it holds for the purpose, accepts and resets
//     what waits, and takes the spare again, so that its backlog empties
//     and the loop does not spin on a listener that stays readable. Each
//     episode is logged once (flow.Refusals); new connections work again
//     as soon as slots or descriptors free up.
//
// Per-connection state lives in an array indexed by flow.Index, sized
// like the flow table; the steady state (data both ways, ACKs) allocates
// nothing and makes no system call that is not moving data or reading
// the window.
package tcp
