// Package splice is pasta's TCP splice engine: it forwards a loopback TCP
// connection accepted on one side (the host's loopback on a -t port, or the
// namespace's on a -T port) to a new connection made from the other side,
// and moves the bytes between the two sockets with splice(2) through one
// pipe per direction, inside the kernel: no frames, no copies to user
// space, no sequence numbers of ours (tcp.md §9, addressing.md §4).
// Choosing which connections come here and where they go is the caller's
// business (the listeners and nat.Target); this package is the engine.
//
// # Theory of operation
//
// Connections. Handler.Connect takes the accepted socket and a pre-opened
// socket of the destination's family from the pool of the other side, and
// starts a non-blocking connect. A connection lives in a fixed array of
// MaxConns slots with a free list; both of its sockets are registered with
// the event loop under loop.KindTCPSplice, the Ref's index holding the slot
// shifted left once and the socket's side (0: accepted, 1: connected) in
// the low bit. While connecting, only the connecting socket is watched
// (EPOLLOUT) and the accepted one is not read: there is nowhere to put its
// bytes yet. EPOLLOUT with SO_ERROR 0 completes the connect: TCP_NODELAY
// and TCP_QUICKACK on both sockets, two pipes from the pipe pool, then the
// optional Accelerator's Pair. Anything else while connecting (an error,
// a hang-up on either socket, a failed connect) resets both.
//
// Directions. Direction d moves bytes from socket d to socket 1-d through
// pipe d: splice(socket d -> pipe, up to the pipe's capacity), then
// splice(pipe -> socket 1-d). Both calls pass SPLICE_F_MOVE (a hint: move
// pages rather than copy them where the kernel can) and SPLICE_F_NONBLOCK,
// which makes the pipe's side non-blocking; the sockets' own O_NONBLOCK
// makes the socket's side so. The bytes a write leaves in the pipe are
// counted: while a pipe holds bytes, the direction does not read its source
// (TCP then throttles the sender through the receive window: backpressure,
// and no busy loop on a level-triggered EPOLLIN we cannot serve) and waits
// for EPOLLOUT on its destination instead. Otherwise its source is watched
// level-triggered for EPOLLIN|EPOLLRDHUP. The work per event is bounded
// (maxRounds reads per direction, and a read shorter than 90 % of the pipe
// ends the round: the receive queue was drained), so that one bulk
// connection cannot starve the others; whenever a direction stops with an
// empty pipe its source is still watched level-triggered, so the data left
// behind is reported again on the next turn.
//
// What splice returns. From a TCP socket, splice returns the bytes moved,
// 0 at the end of the stream (the peer's FIN, once everything before it is
// read), or EAGAIN when nothing is queued (or the pipe is full: we never
// read into a pipe that still holds bytes, so that case does not arise).
// Into a socket it returns what fitted in the send buffer, possibly less
// than asked, or EAGAIN when nothing fitted; the rest stays in the pipe.
// EPIPE or ECONNRESET mean the destination's peer is gone.
//
// SPLICE_F_MORE. The write out of the pipe carries SPLICE_F_MORE (the
// socket's MSG_MORE) when the read before it filled at least 90 % of the
// pipe: a full pipe means a bulk transfer with more right behind, so TCP
// may hold back a last segment shorter than the MSS instead of sending a
// runt (the segments in flight bring ACKs that push it out). After a short
// read the data is likely a whole request or answer, and must leave now:
// no MSG_MORE, and TCP_NODELAY keeps Nagle from delaying it either.
//
// Pipe size. The default pipe holds 64 KiB (16 pages), which would cap
// every splice at 64 KiB and cost a system call pair per 64 KiB. New tries
// F_SETPIPE_SZ of 8 MiB on every pipe of the first pool, halving until all
// succeed, never below the default: beyond fs.pipe-max-size (1 MiB by
// default) only CAP_SYS_RESOURCE may grow a pipe, and a user past
// fs.pipe-user-pages-soft may not grow any. The capacity is what the pipe
// buffer ring can hold in slots (one per page or skb fragment), allocated
// when resized; data pages are only the sockets' own, moved by reference.
// Pipes made later (after the sandbox, unprivileged) may not get the chosen
// size: each keeps the capacity the kernel gave it, and its direction reads
// that much at most.
//
// Half-close. A read of 0 is the peer's FIN on that socket: as the pipe is
// empty then (we only read into an empty pipe), the other socket is shut
// down for writing at once (SHUT_WR, our FIN to its peer), and the
// direction is finished. Both directions finished is a clean close: both
// sockets are closed without a reset, and their (empty) pipes go back to
// the pool.
//
// Hang-ups. EPOLLHUP cannot be masked in epoll. A socket whose peer sent
// its FIN and which we shut down for writing is hung up while it may still
// hold bytes that its full pipe keeps us from reading: that is a normal
// half-close, not a reset, and a socket that has nothing to wait for is
// registered edge-triggered with no events, so that its hang-up is
// reported once rather than on every turn. A hang-up on a socket we did
// not shut down is a reset or a close without a FIN.
//
// Resets. EPOLLERR (SO_ERROR logged at debug), a hang-up as above, a failed
// connect, unexpected events while connecting, splice or shutdown errors
// other than EAGAIN: both sockets are closed with SO_LINGER 0, so that both
// peers see a reset, and both pipes are closed rather than pooled (they
// may hold bytes).
//
// Freeing. A closed connection's descriptors are closed at once (which
// takes them out of epoll), but its slot is freed only at the end of the
// loop's turn (loop.OnTurnEnd): an event of the same turn for a closed
// connection then finds its slot marked closed and is ignored, and never
// finds it reused by a connection accepted later in that turn.
//
// Pools. Sockets are made before they are needed, PoolSize per family and
// side (non-blocking, close-on-exec, TCP_NODELAY): those of pasta's
// namespace are made on a thread inside it (Options.NSDo), a thread hop the
// connection's path should not wait for. Refill tops up every pool: from
// the loop's 1 s tick, and from Connect (and connect completion, for
// pipes) when more than half of a pool is used; an empty pool is refilled
// on the spot. A family the kernel does not have (EAFNOSUPPORT: IPv6
// disabled at boot) leaves its pool empty for good, and connections
// towards it fail cleanly. Refill makes only socket, setsockopt, pipe2,
// fcntl (F_SETPIPE_SZ, F_GETPIPE_SZ) and close calls, all registered with
// the seccomp allow-list here (pasta only), so it works after the sandbox.
//
// Accelerator. An Accelerator (an eBPF sockmap) may take the bytes over
// inside the kernel once both sockets are connected: Pair is called before
// any byte is spliced, Unpair before either socket is closed. The pipes
// are taken and the sockets watched all the same: whatever still reaches
// a socket's receive queue (bytes queued before Pair, or passed up by the
// program) is spliced as usual, and the FINs and errors that end the
// connection arrive as events. A Pair error leaves the connection on the
// splice path (logged once at debug). An Accelerator that is also a Reader
// (datapath/sockmap) reads its paired sockets itself, in place of the
// splice into the pipe: it may answer EBUSY while the kernel still holds
// bytes of the direction for the destination, and the direction then
// neither reads nor shuts down until EPOLLOUT on the destination
// (fHeld0<<d), so that nothing overtakes those bytes or cuts them off.
//
// Allocation. Nothing is allocated per connection or per event: the slots,
// free list, closing list and pools are sized in New, socket addresses are
// built in fields of the Handler, and system calls return bare errnos.
// Only failures allocate (the error Connect returns, debug lines).
package splice
