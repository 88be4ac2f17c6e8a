// The virtio-net header that a tap opened with IFF_VNET_HDR puts in front of
// every frame, both ways (include/uapi/linux/virtio_net.h, struct
// virtio_net_hdr): it carries checksum offload (the frame's checksum is
// partial, to be completed over [CsumStart, end) and stored at CsumStart +
// CsumOffset) and segmentation offload (one frame holds many TCP segments of
// GSOSize payload bytes each). wireguard-go's tun/offload_linux.go handles
// the same header.

package tap

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// VnetHdrLen is the size of struct virtio_net_hdr, the tap's default vnet
// header size (TUNSETVNETHDRSZ is left alone).
const VnetHdrLen = 10

// Flags of the virtio-net header.
const (
	// VnetNeedsCsum: the checksum field holds the pseudo-header sum only;
	// the receiver completes it over [CsumStart, end) if it needs to
	// (local delivery trusts it as CHECKSUM_PARTIAL and computes nothing).
	VnetNeedsCsum = 1
	// VnetDataValid: the checksum was verified (from the kernel only: a tap
	// ignores it on frames written to it).
	VnetDataValid = 2
)

// GSO types of the virtio-net header.
const (
	GSONone  = 0
	GSOTCPv4 = 1
	GSOUDP   = 3
	GSOTCPv6 = 4
	GSOUDPL4 = 5
	GSOECN   = 0x80
)

// VnetHdr is struct virtio_net_hdr. A tap uses the host's byte order for
// the 16-bit fields unless TUNSETVNETLE/BE say otherwise (legacy virtio):
// little-endian on every architecture we build for.
type VnetHdr struct {
	Flags      uint8
	GSOType    uint8
	HdrLen     uint16 // Ethernet, IP and TCP headers: what the kernel keeps linear
	GSOSize    uint16 // payload bytes per segment
	CsumStart  uint16 // offset of the transport header from the frame start
	CsumOffset uint16 // offset of the checksum field within it (TCP 16, UDP 6)
}

// Errors of DecodeVnetHdr.
var (
	ErrVnetShort   = errors.New("virtio-net header truncated")
	ErrVnetGSOType = errors.New("virtio-net header: unknown GSO type")
	ErrVnetCsum    = errors.New("virtio-net header: checksum offsets outside the frame")
	ErrVnetGSOSize = errors.New("virtio-net header: GSO without a segment size")
)

// Encode writes h into b.
//
// Preconditions: len(b) >= VnetHdrLen.
func (h *VnetHdr) Encode(b []byte) {
	_ = b[VnetHdrLen-1]
	b[0] = h.Flags
	b[1] = h.GSOType
	binary.LittleEndian.PutUint16(b[2:], h.HdrLen)
	binary.LittleEndian.PutUint16(b[4:], h.GSOSize)
	binary.LittleEndian.PutUint16(b[6:], h.CsumStart)
	binary.LittleEndian.PutUint16(b[8:], h.CsumOffset)
}

// DecodeVnetHdr parses the virtio-net header in b and checks it against
// the frame that follows it, frameLen bytes long: the checksum offsets
// must point into the frame and a GSO type must be one we know, with a
// segment size.
//
// b: at least VnetHdrLen bytes; frameLen: the frame's length. Returns the
// header, or an error for a malformed one.
func DecodeVnetHdr(b []byte, frameLen int) (VnetHdr, error) {
	if len(b) < VnetHdrLen {
		return VnetHdr{}, ErrVnetShort
	}
	h := VnetHdr{
		Flags:      b[0],
		GSOType:    b[1],
		HdrLen:     binary.LittleEndian.Uint16(b[2:]),
		GSOSize:    binary.LittleEndian.Uint16(b[4:]),
		CsumStart:  binary.LittleEndian.Uint16(b[6:]),
		CsumOffset: binary.LittleEndian.Uint16(b[8:]),
	}
	if h.Flags&VnetNeedsCsum != 0 && int(h.CsumStart)+int(h.CsumOffset)+2 > frameLen {
		return h, fmt.Errorf("%w: start %d offset %d, frame %d", ErrVnetCsum, h.CsumStart, h.CsumOffset, frameLen)
	}
	switch h.GSOType &^ GSOECN {
	case GSONone:
		return h, nil
	case GSOTCPv4, GSOTCPv6, GSOUDP, GSOUDPL4:
	default:
		return h, fmt.Errorf("%w: %#x", ErrVnetGSOType, h.GSOType)
	}
	if h.GSOSize == 0 {
		return h, ErrVnetGSOSize
	}
	return h, nil
}
