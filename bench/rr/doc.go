// Package rr is a request/response benchmark with neper's definitions, for
// machines where neper (tcp_rr, tcp_crr, udp_rr) is not installed.
//
// # Theory of operation
//
// The three tests are the ones neper and netperf define:
//
//   - tcp_rr: one TCP connection; the client sends a request (1 byte by
//     default), waits for the response (1 byte), and repeats. One
//     transaction is one request and its response on the open connection.
//   - tcp_crr: connect, request, response, close, repeated: one transaction
//     includes the three-way handshake and the teardown.
//   - udp_rr: tcp_rr over one UDP socket. A lost datagram would stall the
//     ping-pong for good, so the client waits at most a bounded time for a
//     response, counts the transaction lost and sends the next request.
//
// One server serves all three on one port number (TCP and UDP). The
// client measures every transaction with the monotonic clock and reports
// in neper's key=value format: num_transactions, throughput (transactions
// per second), latency_min/max/mean/stddev/p50/p90/p99/p99.9 in seconds as
// neper prints them, plus the same latencies in microseconds (suffix _us),
// which is the unit our tables use.
//
// Sockets are plain blocking file descriptors driven by raw system calls
// (golang.org/x/sys/unix), not the Go netpoller: a blocking read wakes the
// thread directly, as neper's epoll loop does, so the figures are those of
// the network path and not of the goroutine scheduler.
//
// Everything is bounded: the client stops at its duration, every connect,
// read and write has a timeout (SO_RCVTIMEO/SO_SNDTIMEO), and the server
// exits when its lifetime ends.
package rr
