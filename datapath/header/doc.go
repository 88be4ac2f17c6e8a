// Package header holds packet views over raw bytes, in the style of gVisor's
// pkg/tcpip/header: Ethernet, ARP, IPv4, IPv6, ICMPv4, ICMPv6, UDP and TCP
// are byte slices with accessor methods, never parsed into structs and never
// copied.
//
// # Theory of operation
//
// A frame from the guest is untrusted. Before any accessor of a view is used
// on such bytes, the matching Parse function checks every length the
// accessors rely on (header length fields against the buffer, version, IHL,
// total length, extension header chain) and returns the view trimmed to the
// length the header claims, so that Ethernet padding never leaks into a
// payload. Accessors themselves do no checking: on a view that did not come
// from a Parse function or an Encode builder they may panic.
// Preconditions of every accessor: the view was returned by ParseX or built
// by EncodeX.
//
// Frames towards the guest are built in place in a buffer handed out by
// tap.Out: EncodeEthernet, EncodeIPv4, EncodeIPv6, EncodeUDP, EncodeTCP and
// EncodeARP write a header at the start of the caller's slice and return its
// length, so a protocol writes headers outermost first and its payload after
// them, then fills in lengths and checksums.
//
// Nothing in this package allocates: errors are package-level sentinels,
// addresses are returned as arrays or as netip.Addr built with
// netip.AddrFrom4/AddrFrom16 (which do not allocate), and the TCP option
// parser returns a small struct by value.
package header
