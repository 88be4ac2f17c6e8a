// Package icmp translates the guest's ICMP and ICMPv6 echo requests into
// echo requests from the host, and the answers back (addressing.md §7).
//
// # Theory of operation
//
// A flow is one (guest source, destination, guest identifier): kind
// flow.Ping in the shared table, key slot 0 = (proto, guest source, guest
// id, destination, 0). The host-side destination is nat.FromGuest's (the
// gateway reaches 127.0.0.1/::1). The answer goes to the guest from the
// address it pinged, with its own identifier and sequence number, TTL/hop
// limit 255; like pasta, a reply with the same sequence number as the
// previous reply of the flow is dropped as a duplicate. A flow lives 60 s
// after the guest's last request (replies do not refresh it), checked on
// the 1 s tick; ICMP errors are not relayed.
//
// Two kinds of host socket can carry the requests:
//
//   - Raw sockets (SOCK_RAW, IPPROTO_ICMP/IPPROTO_ICMPV6), one per family,
//     opened by Prepare before the sandbox while the process still has
//     CAP_NET_RAW (started as root), and shared by every flow. We choose the
//     host-side identifier (unique per destination among our flows, key slot
//     1 = (proto, destination, host id, ::, 1)) and find the flow of a reply
//     by its source and identifier. A raw IPv4 socket reads the IP header
//     too, a raw ICMPv6 socket does not (the source comes from recvfrom);
//     ICMP_FILTER and ICMP6_FILTER make the kernel hand us echo replies only,
//     not every ICMP message the host receives. For IPv4 we update the
//     checksum for the new identifier (RFC 1624); for ICMPv6 raw sockets the
//     kernel computes it.
//   - Unprivileged "ping" sockets (SOCK_DGRAM, IPPROTO_ICMP/ICMPV6), one per
//     flow, connected to the destination; the kernel picks the identifier
//     and computes checksums, and the socket receives only its own replies.
//     They need our group in net.ipv4.ping_group_range; without it (the
//     range is "1 0" on many systems, so even root is refused) one warning
//     suggests widening it and requests are dropped.
//
// The C original uses ping sockets only: started as root it drops to nobody
// and then, with the default range, has no working ICMP at all. Opening the
// raw sockets before dropping privileges keeps ICMP working in that case.
package icmp
