// TCP header view, option parsing, checksum and builder (RFC 9293,
// RFC 7323 for window scaling and timestamps).
package header

import "encoding/binary"

// TCP is a view of a TCP segment: header with options, and payload. Its
// length is the segment length (the IP payload), as TCP has no length
// field of its own.
type TCP []byte

// TCP option kinds (IANA).
const (
	TCPOptEOL       uint8 = 0
	TCPOptNOP       uint8 = 1
	TCPOptMSS       uint8 = 2
	TCPOptWS        uint8 = 3
	TCPOptSACKPerm  uint8 = 4
	TCPOptSACK      uint8 = 5
	TCPOptTimestamp uint8 = 8
)

// TCPMaxWS is the largest window shift (RFC 7323 §2.3): larger values
// are treated as 14.
const TCPMaxWS = 14

// ParseTCP validates a TCP segment: at least 20 bytes and a data offset of
// at least 5 words that fits in the buffer. The checksum is not verified.
//
// b: the upper-layer bytes (already trimmed to the IP payload length).
// Returns the view, or ErrTruncated / ErrHeaderLen.
func ParseTCP(b []byte) (TCP, error) {
	if len(b) < TCPMinLen {
		return nil, ErrTruncated
	}
	off := int(b[12]>>4) * 4
	if off < TCPMinLen || off > len(b) {
		return nil, ErrHeaderLen
	}
	return TCP(b), nil
}

// SrcPort returns the source port.
func (t TCP) SrcPort() uint16 { return binary.BigEndian.Uint16(t[0:]) }

// DstPort returns the destination port.
func (t TCP) DstPort() uint16 { return binary.BigEndian.Uint16(t[2:]) }

// Seq returns the sequence number.
func (t TCP) Seq() uint32 { return binary.BigEndian.Uint32(t[4:]) }

// Ack returns the acknowledgment number.
func (t TCP) Ack() uint32 { return binary.BigEndian.Uint32(t[8:]) }

// DataOffset returns the header length in bytes (data offset × 4).
func (t TCP) DataOffset() int { return int(t[12]>>4) * 4 }

// Flags returns the flag byte (TCPFlag* bits).
func (t TCP) Flags() uint8 { return t[13] }

// Window returns the (unscaled) window field.
func (t TCP) Window() uint16 { return binary.BigEndian.Uint16(t[14:]) }

// Checksum returns the checksum field.
func (t TCP) Checksum() uint16 { return binary.BigEndian.Uint16(t[16:]) }

// Urgent returns the urgent pointer.
func (t TCP) Urgent() uint16 { return binary.BigEndian.Uint16(t[18:]) }

// Options returns the option bytes between the fixed header and the data.
func (t TCP) Options() []byte { return t[TCPMinLen:t.DataOffset()] }

// Payload returns the segment data.
func (t TCP) Payload() []byte { return t[t.DataOffset():] }

// PayloadLen returns the number of data bytes.
func (t TCP) PayloadLen() int { return len(t) - t.DataOffset() }

// SetSrcPort sets the source port.
func (t TCP) SetSrcPort(p uint16) { binary.BigEndian.PutUint16(t[0:], p) }

// SetDstPort sets the destination port.
func (t TCP) SetDstPort(p uint16) { binary.BigEndian.PutUint16(t[2:], p) }

// SetSeq sets the sequence number.
func (t TCP) SetSeq(v uint32) { binary.BigEndian.PutUint32(t[4:], v) }

// SetAck sets the acknowledgment number.
func (t TCP) SetAck(v uint32) { binary.BigEndian.PutUint32(t[8:], v) }

// SetFlags sets the flag byte.
func (t TCP) SetFlags(f uint8) { t[13] = f }

// SetWindow sets the window field.
func (t TCP) SetWindow(w uint16) { binary.BigEndian.PutUint16(t[14:], w) }

// SetChecksumValue stores v in the checksum field as is.
func (t TCP) SetChecksumValue(v uint16) { binary.BigEndian.PutUint16(t[16:], v) }

// SetChecksumIPv4 computes the checksum over the whole view (header and
// data) and the IPv4 pseudo-header, and stores it.
//
// src, dst: the addresses of the enclosing IPv4 header.
func (t TCP) SetChecksumIPv4(src, dst [4]byte) {
	t[16], t[17] = 0, 0
	t.SetChecksumValue(finish(sum(t, pseudoIPv4(src, dst, ProtoTCP, uint16(len(t))))))
}

// SetChecksumIPv6 computes the checksum over the whole view and the IPv6
// pseudo-header, and stores it.
//
// src, dst: the addresses of the enclosing IPv6 header.
func (t TCP) SetChecksumIPv6(src, dst *[16]byte) {
	t[16], t[17] = 0, 0
	t.SetChecksumValue(finish(sum(t, pseudoIPv6(src, dst, ProtoTCP, uint32(len(t))))))
}

// IsChecksumValidIPv4 reports whether the checksum over the view is correct.
func (t TCP) IsChecksumValidIPv4(src, dst [4]byte) bool {
	return sum(t, pseudoIPv4(src, dst, ProtoTCP, uint16(len(t)))) == 0xffff
}

// IsChecksumValidIPv6 reports whether the checksum over the view is correct.
func (t TCP) IsChecksumValidIPv6(src, dst *[16]byte) bool {
	return sum(t, pseudoIPv6(src, dst, ProtoTCP, uint32(len(t)))) == 0xffff
}

// TCPOptions are the options gopasst acts on, as found in a segment.
type TCPOptions struct {
	MSS           uint16 // 0: absent
	WS            int8   // window shift, -1: absent; capped at TCPMaxWS
	SACKPermitted bool
	Timestamps    bool // TSVal and TSEcr are valid
	TSVal, TSEcr  uint32
}

// ParseTCPOptions walks TCP option bytes (RFC 9293 §3.2). Known options
// with a wrong length are ignored, as Linux does; a length byte that is
// missing, below 2, or runs past the end is an error.
//
// opts: the option bytes (TCP.Options()). Returns what was found (MSS 0 and
// WS -1 when absent), or ErrTCPOption with what was found before the fault.
func ParseTCPOptions(opts []byte) (TCPOptions, error) {
	o := TCPOptions{WS: -1}
	for len(opts) > 0 {
		kind := opts[0]
		if kind == TCPOptEOL {
			break
		}
		if kind == TCPOptNOP {
			opts = opts[1:]
			continue
		}
		if len(opts) < 2 {
			return o, ErrTCPOption
		}
		l := int(opts[1])
		if l < 2 || l > len(opts) {
			return o, ErrTCPOption
		}
		switch {
		case kind == TCPOptMSS && l == 4:
			o.MSS = binary.BigEndian.Uint16(opts[2:])
		case kind == TCPOptWS && l == 3:
			o.WS = int8(min(opts[2], TCPMaxWS))
		case kind == TCPOptSACKPerm && l == 2:
			o.SACKPermitted = true
		case kind == TCPOptTimestamp && l == 10:
			o.Timestamps = true
			o.TSVal = binary.BigEndian.Uint32(opts[2:])
			o.TSEcr = binary.BigEndian.Uint32(opts[6:])
		}
		opts = opts[l:]
	}
	return o, nil
}

// TCPFields are the values EncodeTCP writes.
type TCPFields struct {
	SrcPort, DstPort uint16
	Seq, Ack         uint32
	Flags            uint8
	Window           uint16
	OptLen           int // option bytes the caller writes after the fixed header; multiple of 4, ≤ 40
}

// EncodeTCP writes the 20-byte fixed TCP header at the start of b, with a
// data offset covering f.OptLen option bytes, zero checksum and urgent
// pointer. The caller writes the options (PutTCPOptMSS, PutTCPOptWS, NOPs)
// at b[20:20+f.OptLen] and the checksum once the data is in place.
//
// b: destination buffer, at least TCPMinLen bytes; f: the field values.
// Returns the header length, 20 + f.OptLen.
func EncodeTCP(b []byte, f TCPFields) int {
	_ = b[TCPMinLen-1]
	binary.BigEndian.PutUint16(b[0:], f.SrcPort)
	binary.BigEndian.PutUint16(b[2:], f.DstPort)
	binary.BigEndian.PutUint32(b[4:], f.Seq)
	binary.BigEndian.PutUint32(b[8:], f.Ack)
	hl := TCPMinLen + f.OptLen
	b[12] = uint8(hl/4) << 4
	b[13] = f.Flags
	binary.BigEndian.PutUint16(b[14:], f.Window)
	b[16], b[17], b[18], b[19] = 0, 0, 0, 0
	return hl
}

// PutTCPOptMSS writes a 4-byte MSS option at the start of b.
//
// b: at least 4 bytes; mss: the value. Returns 4.
func PutTCPOptMSS(b []byte, mss uint16) int {
	_ = b[3]
	b[0], b[1] = TCPOptMSS, 4
	binary.BigEndian.PutUint16(b[2:], mss)
	return 4
}

// PutTCPOptWS writes a NOP and a 3-byte window scale option (4 bytes, so
// that the next option stays aligned) at the start of b.
//
// b: at least 4 bytes; shift: the window shift (≤ TCPMaxWS). Returns 4.
func PutTCPOptWS(b []byte, shift uint8) int {
	_ = b[3]
	b[0], b[1], b[2], b[3] = TCPOptNOP, TCPOptWS, 3, shift
	return 4
}
