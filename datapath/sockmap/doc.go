// Package sockmap is the splice path's in-kernel accelerator: an eBPF
// sk_skb stream verdict program on a sockmap that moves the bytes of a
// spliced TCP connection from each of its two sockets to the other inside
// the kernel, with no pipe, no system call and no wake-up of our process
// per message. It implements datapath/splice's Accelerator (Pair, Unpair)
// and Reader (Read); the engine keeps everything else: connecting, the
// FINs, resets, closing, and any direction the kernel path gives back.
//
// # Theory of operation
//
// Set-up (Probe, once per process, before the sandbox). Three maps and a
// program, built with cilium/ebpf's asm package so that no C compiler is
// needed: "sources", a SOCKMAP holding both sockets of every paired
// connection, to which the verdict program is attached
// (BPF_SK_SKB_STREAM_VERDICT: the kernel runs it for every skb a member
// socket receives); "peers", a SOCKHASH from a socket's cookie to the
// other socket of its connection, the redirect target; "flows", a HASH
// from a socket's cookie to what the program did with its bytes
// (flowState). The maps are sized for Options.MaxPairs at Probe, and the
// program's descriptor is closed once attached (the map holds it). At run
// time only map updates, deletes and lookups remain (the bpf system call,
// allowed by argument to those three commands, and only when Probe
// succeeded: registerBPF), plus getsockopt, setsockopt, ioctl(SIOCOUTQ),
// recvfrom and write, all raw, allocation-free, annotated beside their
// call in calls.go.
//
// Pair (the engine calls it once both sockets are connected, before any
// byte was spliced) reads both cookies (SO_COOKIE: the value
// bpf_get_socket_cookie returns for the socket in the program, unique
// across network namespaces, so the two sockets may live in different
// ones) and what each socket wrote so far (TCP_INFO's bytes acknowledged
// plus SIOCOUTQ), then adds the flow states, both peers, and last the two
// sockets to sources: a socket's program runs from its insertion in
// sources on, and must find its peer and state by then. Bytes that were
// queued before Pair (the client wrote before our connect completed) wait
// for a data_ready the kernel will not call again until more arrive:
// setting SO_RCVLOWAT to its default value makes TCP call it
// (tcp_set_rcvlowat -> tcp_data_ready), which is now the psock's, and the
// program forwards them, in order, before anything later. Unpair deletes
// the sources elements first (no program runs for the pair afterwards),
// then the peers and flow states; deleting an element the kernel removed
// itself (a closed or reset socket leaves every map) is no error.
//
// The verdict. For each skb (program.go has it in C): no flow state: pass
// it up (not reached: Pair adds the state first); length 0: drop it;
// starting before the end of the bytes the socket's earlier skbs carried
// (the flow state's Next, from TCP's control block of the skb: see
// "Overlapping skbs" below): cut the repeated front off, and drop the skb
// if nothing is left; direction already over its budget: pass it up; the peer gone from peers
// (closed, reset): drop it, as the connection is being torn down anyway;
// otherwise read the peer's tcp_sock.write_seq (bpf_skc_to_tcp_sock, at
// the offset the kernel's BTF gives) and, if what the program redirected
// minus what the peer wrote since the first redirect exceeds MaxQueued,
// mark the direction congested and pass the skb up; else redirect it to
// the peer's egress (bpf_sk_redirect_hash, flags 0) and count it.
//
// # Kernel facts this relies on, and why the program is shaped so
//
// Redirect has no backpressure. tcp_read_skb takes the skb off the
// receiving socket's queue and the verdict's redirect advances copied_seq
// (tcp_eat_skb): the receive window reopens at once, whatever the peer
// does. The skb waits on the peer's psock (ingress_skb) for a kernel
// worker (sk_psock_backlog) that writes it into the peer's send buffer,
// retrying every jiffy while that is full, with no bound on the queue:
// with a reader that does not read, 512 MiB were accepted in 2 s here
// (6.18). Hence the budget: past MaxQueued the direction stops being
// redirected for good and is passed up to the receiving socket itself,
// where it is charged to the socket's receive buffer (sk_rmem_alloc), so
// that TCP's window closes and the sender is held back, as on the splice
// path.
//
// splice(2) does not see passed bytes. tcp_bpf queues them on the psock's
// own list (ingress_msg), which only its recvmsg reads; splice reads the
// receive queue (tcp_splice_read), returns EAGAIN while passed bytes
// wait (seen on 6.18), and would return 0 (end of stream) at a FIN with
// passed bytes still waiting. So the engine reads paired sockets through
// Read, which copies them into the direction's pipe: read with recvmsg
// (tcp_bpf_recvmsg takes the psock's queue first, then the receive queue,
// in order), then written whole into the empty pipe, never more than it
// holds. Only congested directions pay this copy; taking the socket out of
// sources instead, to get splice back, stalled the connection here (the
// bytes then queued were never seen), so a direction once given back stays
// with the engine.
//
// Order and ends. The worker writes asynchronously: when a direction
// becomes the engine's, or its FIN arrives, the peer's psock may still
// hold redirected bytes. Anything the engine wrote into the peer then
// would overtake them, and a shutdown(SHUT_WR) of the peer would make the
// worker's writes fail with EPIPE: lost. Read therefore returns EBUSY
// while the program's count of redirected bytes exceeds what the peer
// wrote since Pair (its write_seq, from TCP_INFO's bytes acknowledged then
// SIOCOUTQ: an ACK between the two makes the sum smaller, never larger,
// so the error is on the safe side), and the engine waits for the peer's
// EPOLLOUT (the worker writes as its send buffer drains) before it tries
// again. The count is exact while nothing but the worker writes into the
// peer, which holds until Read returns the first byte or the end: after
// that no byte of the direction is redirected any more.
//
// A bare FIN. tcp_read_skb hands the program the zero-length skb of a FIN
// that came alone; redirected, the worker's write of 0 bytes counts as a
// hard error: it sets EPIPE on the peer (SO_ERROR 32, seen on 6.18) and
// stops its psock, and the engine would reset a connection that only
// half-closed. The program drops zero-length skbs; the FIN itself is TCP
// state (RCV_SHUTDOWN), which the engine sees as EPOLLRDHUP and Read as
// the end of stream.
//
// Passed bytes on the backlog. When the receiving socket's buffer is full,
// or its psock's queue holds skbs redirected to it by the other direction,
// a passed skb waits on that queue too, invisible to recvmsg: the program
// counts passed bytes, and Read reports the end of stream only once it
// has consumed them all (EBUSY otherwise).
//
// Overlapping skbs. TCP queues a segment that starts before rcv_nxt and
// ends after it whole, without cutting its repeated front
// (tcp_data_queue's "partial packet", and tcp_ofo_queue for one that
// waited out of order): its readers skip those bytes, as tcp_recvmsg and
// tcp_read_sock start at copied_seq. tcp_read_skb does not: it takes whole
// skbs off the receive queue and hands them to the verdict program with
// no offset (6.18.44), so the bytes such an skb repeats would reach the
// peer, or Read, a second time. These segments come from retransmissions
// that cover bytes which did arrive: on loopback, under CPU load, when
// the receiving socket's backlog or receive buffer overflowed
// (TcpExtTCPBacklogDrop, TcpExtRcvPruned) and the sender retransmitted
// another span than was lost. Seen here (TestStress: 64 MiB each way at
// once, two busy processes on two CPUs) about once in 150 transfers: one
// segment received twice (65483 bytes on IPv4, 65464 on IPv6, one
// loopback MSS; CI once saw two), each time exactly the bytes of one skb
// that started before the end of the previous one, and never such an skb
// in a transfer that came out right. The program therefore keeps, per
// socket, the sequence number after the last byte it saw (Next), reads
// each skb's seq, end_seq and FIN flag from its tcp_skb_cb (through the
// kfunc bpf_cast_to_kern_ctx, at offsets from the kernel's BTF), and
// takes the repeated bytes off the skb's front with bpf_skb_adjust_room
// (at most 0xfff bytes a call, 64 calls at most: 256 KiB) before it
// redirects or passes the rest; an skb that only repeats is dropped. The
// cut also keeps copied_seq right, as the kernel advances it by the
// skb's length after the program. Should a cut fail (more than 256 KiB
// repeated, no memory), the program marks the flow broken and passes the
// skb up, and Read resets the connection (ECONNRESET): a reset, never a
// corrupted stream.
//
// # Limits
//
// The counts are per direction for the life of the pair; write_seq is
// compared in 32 bits (serial arithmetic), so any length of connection
// works. IPv4 and IPv6 alike (the maps hold sockets, not addresses). The
// program needs the kfunc bpf_cast_to_kern_ctx (6.2) and the kernel's
// BTF; without them Probe fails and the engine splices alone.
// Sockets with a ULP (kTLS) are refused by the kernel, and Pair then
// changes nothing. Pair and Unpair allocate nothing in steady state; Read
// neither.
//
// A direction given back to the engine shares the receiving psock's
// backlog with the other direction's redirected skbs: while that backlog
// waits for a slow reader on the other side, passed bytes queued behind
// it wait too. An application that stops reading one direction until it
// has written the other through a congested path can then stall where
// plain TCP would not; it needs both directions over their budgets at
// once.
package sockmap
