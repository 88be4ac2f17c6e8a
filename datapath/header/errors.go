// Sentinel errors returned by the Parse functions. They are package-level
// values so that returning them never allocates on the hot path; callers
// wrap them with context only off the hot path (or count them).
package header

import "errors"

var (
	// ErrTruncated: the buffer is shorter than the header it should hold.
	ErrTruncated = errors.New("header: truncated")
	// ErrVersion: the IP version field does not match the parser.
	ErrVersion = errors.New("header: wrong IP version")
	// ErrHeaderLen: a header length field is below its minimum or beyond
	// the buffer (IPv4 IHL, TCP data offset, extension header length).
	ErrHeaderLen = errors.New("header: bad header length")
	// ErrTotalLen: a total or payload length field disagrees with the
	// buffer (longer than the bytes received, or shorter than the header).
	ErrTotalLen = errors.New("header: bad total length")
	// ErrFragment: the packet is a fragment (other than an atomic one);
	// gopasst does not reassemble.
	ErrFragment = errors.New("header: fragment")
	// ErrExtHeader: a malformed or misplaced IPv6 extension header chain.
	ErrExtHeader = errors.New("header: bad IPv6 extension header")
	// ErrARPFormat: an ARP packet that is not Ethernet/IPv4.
	ErrARPFormat = errors.New("header: ARP not Ethernet/IPv4")
	// ErrTCPOption: malformed TCP options (length running past the end).
	ErrTCPOption = errors.New("header: bad TCP option")
)
