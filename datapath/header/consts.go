// Protocol constants shared by the views and by every protocol handler:
// EtherTypes, IP protocol numbers, header lengths, TCP flags, ICMP types.
package header

// EtherTypes (IEEE 802 numbers).
const (
	EtherTypeIPv4 uint16 = 0x0800
	EtherTypeARP  uint16 = 0x0806
	EtherTypeIPv6 uint16 = 0x86dd
)

// IP protocol numbers and IPv6 Next Header values (IANA).
const (
	ProtoHopByHop uint8 = 0
	ProtoICMP     uint8 = 1
	ProtoTCP      uint8 = 6
	ProtoUDP      uint8 = 17
	ProtoRouting  uint8 = 43
	ProtoFragment uint8 = 44
	ProtoICMPv6   uint8 = 58
	ProtoNoNext   uint8 = 59
	ProtoDestOpts uint8 = 60
)

// Header lengths in bytes.
const (
	EthernetLen  = 14 // destination, source, EtherType (no VLAN tag)
	ARPLen       = 28 // Ethernet/IPv4 ARP (RFC 826)
	IPv4MinLen   = 20 // IHL 5
	IPv4MaxLen   = 60 // IHL 15
	IPv6Len      = 40 // fixed header, without extension headers
	UDPLen       = 8
	TCPMinLen    = 20 // data offset 5
	TCPMaxLen    = 60 // data offset 15
	ICMPv4MinLen = 8  // type, code, checksum, 4 bytes of rest-of-header
	ICMPv6MinLen = 8  // every ICMPv6 message we handle has at least 8
)

// TCP flag bits, as in the 13th byte of the header (RFC 9293 §3.1, RFC 3168).
const (
	TCPFlagFIN uint8 = 0x01
	TCPFlagSYN uint8 = 0x02
	TCPFlagRST uint8 = 0x04
	TCPFlagPSH uint8 = 0x08
	TCPFlagACK uint8 = 0x10
	TCPFlagURG uint8 = 0x20
	TCPFlagECE uint8 = 0x40
	TCPFlagCWR uint8 = 0x80
)

// ICMPv4 types (RFC 792).
const (
	ICMPv4EchoReply      uint8 = 0
	ICMPv4DestUnreach    uint8 = 3
	ICMPv4EchoRequest    uint8 = 8
	ICMPv4TimeExceeded   uint8 = 11
	ICMPv4ParamProblem   uint8 = 12
	ICMPv4CodeFragNeeded uint8 = 4 // code of DestUnreach carrying the next-hop MTU
)

// ICMPv6 types (RFC 4443, RFC 4861).
const (
	ICMPv6DestUnreach     uint8 = 1
	ICMPv6PacketTooBig    uint8 = 2
	ICMPv6TimeExceeded    uint8 = 3
	ICMPv6ParamProblem    uint8 = 4
	ICMPv6EchoRequest     uint8 = 128
	ICMPv6EchoReply       uint8 = 129
	ICMPv6RouterSolicit   uint8 = 133
	ICMPv6RouterAdvert    uint8 = 134
	ICMPv6NeighborSolicit uint8 = 135
	ICMPv6NeighborAdvert  uint8 = 136
	ICMPv6Redirect        uint8 = 137
)

// Destination unreachable codes for a datagram no socket takes: ICMPv4
// "port unreachable" (RFC 792), ICMPv6 "port unreachable" (RFC 4443 §3.1).
const (
	ICMPv4CodePortUnreach uint8 = 3
	ICMPv6CodePortUnreach uint8 = 4
)

// ARP operations (RFC 826).
const (
	ARPRequest uint16 = 1
	ARPReply   uint16 = 2
)
