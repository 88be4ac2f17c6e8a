// The vhost-user protocol's wire format (qemu docs/interop/vhost-user.rst):
// the 12-byte header, the payloads of the requests we handle, the feature
// bits we offer, and the checks on every field before the state machine
// sees it. Parsing is pure: no descriptors, no state, so that it can be
// fuzzed on its own.

package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Requests (front end to back end).
const (
	reqGetFeatures         = 1
	reqSetFeatures         = 2
	reqSetOwner            = 3
	reqResetOwner          = 4
	reqSetMemTable         = 5
	reqSetLogBase          = 6
	reqSetLogFD            = 7
	reqSetVringNum         = 8
	reqSetVringAddr        = 9
	reqSetVringBase        = 10
	reqGetVringBase        = 11
	reqSetVringKick        = 12
	reqSetVringCall        = 13
	reqSetVringErr         = 14
	reqGetProtocolFeatures = 15
	reqSetProtocolFeatures = 16
	reqGetQueueNum         = 17
	reqSetVringEnable      = 18
	reqSendRARP            = 19
	reqGetMaxMemSlots      = 36
	reqSetStatus           = 39
	reqGetStatus           = 40
)

// Header flags.
const (
	flagVersion   = 1 // bits 0-1: protocol version 1
	flagReply     = 1 << 2
	flagNeedReply = 1 << 3
	flagsKnown    = 3 | flagReply | flagNeedReply
)

const (
	// hdrLen is the header: request, flags, size, each u32 in host
	// byte order.
	hdrLen = 12
	// maxPayload is the largest payload we take: a memory table of
	// maxRegions regions (8 + 32*8 = 264), qemu's largest message of
	// the ones we handle (the C original's limit too).
	maxPayload = 8 + 32*maxRegions
	// maxFDs is the most descriptors one message may carry.
	maxFDs = maxRegions
	// vringNoFD is bit 8 of a KICK/CALL/ERR payload: no descriptor is
	// attached (polling, which we do not support for kicks).
	vringNoFD = 1 << 8
	// numQueues is what we serve: one queue pair, RX (0) and TX (1).
	numQueues = 2
	rxQ       = 0
	txQ       = 1
)

// Virtio and vhost feature bits.
const (
	fNetCsum      = 1 << 0  // VIRTIO_NET_F_CSUM: the guest may send partial checksums
	fNetGuestCsum = 1 << 1  // VIRTIO_NET_F_GUEST_CSUM: we may send partial checksums
	fNetGuestTSO4 = 1 << 7  // VIRTIO_NET_F_GUEST_TSO4
	fNetGuestTSO6 = 1 << 8  // VIRTIO_NET_F_GUEST_TSO6
	fNetHostTSO4  = 1 << 11 // VIRTIO_NET_F_HOST_TSO4
	fNetHostTSO6  = 1 << 12 // VIRTIO_NET_F_HOST_TSO6
	fNetMrgRxbuf  = 1 << 15 // VIRTIO_NET_F_MRG_RXBUF
	fRingEventIdx = 1 << 29 // VIRTIO_RING_F_EVENT_IDX
	fProtocol     = 1 << 30 // VHOST_USER_F_PROTOCOL_FEATURES
	fVersion1     = 1 << 32 // VIRTIO_F_VERSION_1

	// Features is what GET_FEATURES offers: checksum and TCP
	// segmentation offload both ways, mergeable receive buffers,
	// event-idx, and the protocol features. Not offered, so qemu hides
	// them from the guest: LOG_ALL (no migration), INDIRECT_DESC,
	// packed rings, MQ, MTU, the UDP offloads.
	Features = fNetCsum | fNetGuestCsum | fNetGuestTSO4 | fNetGuestTSO6 |
		fNetHostTSO4 | fNetHostTSO6 | fNetMrgRxbuf | fRingEventIdx | fProtocol | fVersion1
)

// Protocol feature bits.
const (
	pfReplyAck = 1 << 3

	// ProtocolFeatures is what GET_PROTOCOL_FEATURES offers: REPLY_ACK
	// (qemu then asks for an acknowledgement of SET_MEM_TABLE, so that
	// it never touches the rings before we mapped the memory). Not
	// STATUS: SET_STATUS and GET_STATUS are answered all the same, for a
	// front end that sends them anyway. No LOG_SHMFD: without it, and
	// without LOG_ALL, qemu refuses to migrate the VM, which is what we
	// want until migration exists.
	ProtocolFeatures = pfReplyAck
)

// msg is one request, its header checked and its payload parsed.
type msg struct {
	req, flags uint32
	size       uint32
	u64        uint64 // u64 payloads
	index      uint32 // vring state and address: the queue index
	num        uint32 // vring state: the value
	addr       vringAddr
	nregions   int
	regions    [maxRegions]regionDesc
}

// vringAddr is the payload of SET_VRING_ADDR.
type vringAddr struct {
	flags                 uint32
	desc, used, avail, lg uint64
}

// Parsing errors.
var (
	errHeader  = errors.New("bad message header")
	errPayload = errors.New("bad payload size")
	errIndex   = errors.New("queue index out of range")
	errRegions = errors.New("bad memory table")
)

// parseHeader checks a message header: version 1, no REPLY flag (a
// request, not an answer), no unknown flag, a payload that fits.
// Returns request, flags and payload size.
func parseHeader(h []byte) (req, flags, size uint32, err error) {
	req = binary.NativeEndian.Uint32(h[0:])
	flags = binary.NativeEndian.Uint32(h[4:])
	size = binary.NativeEndian.Uint32(h[8:])
	if flags&3 != flagVersion || flags&flagReply != 0 || flags&^flagsKnown != 0 {
		return req, flags, size, fmt.Errorf("%w: request %d flags %#x", errHeader, req, flags)
	}
	if size > maxPayload {
		return req, flags, size, fmt.Errorf("%w: request %d carries %d bytes (at most %d)", errPayload, req, size, maxPayload)
	}
	return req, flags, size, nil
}

// parsePayload parses p, the payload of request req, into m, checking its
// size exactly against what the request carries, and every queue index
// and region count. Unknown requests parse (with any payload): the state
// machine decides about them.
func parsePayload(req uint32, p []byte, m *msg) error {
	m.req, m.size = req, uint32(len(p))
	need := -1
	switch req {
	case reqSetFeatures, reqSetProtocolFeatures, reqSetVringKick, reqSetVringCall, reqSetVringErr, reqSetStatus, reqSetLogFD:
		need = 8
	case reqSetVringNum, reqSetVringBase, reqGetVringBase, reqSetVringEnable:
		need = 8
	case reqSetVringAddr:
		need = 40
	case reqSetMemTable:
		if len(p) < 8 {
			return fmt.Errorf("%w: SET_MEM_TABLE of %d bytes", errPayload, len(p))
		}
		n := binary.NativeEndian.Uint32(p[0:])
		if n == 0 || n > maxRegions {
			return fmt.Errorf("%w: %d regions (1 to %d)", errRegions, n, maxRegions)
		}
		need = 8 + 32*int(n)
	case reqGetFeatures, reqGetProtocolFeatures, reqSetOwner, reqResetOwner, reqGetQueueNum, reqGetStatus, reqGetMaxMemSlots:
		// No payload is defined; qemu sends none, but some front ends
		// send a zero u64: take both.
		if len(p) != 0 && len(p) != 8 {
			return fmt.Errorf("%w: request %d with %d bytes", errPayload, req, len(p))
		}
		return nil
	default:
		return nil
	}
	if len(p) != need {
		return fmt.Errorf("%w: request %d with %d bytes (want %d)", errPayload, req, len(p), need)
	}
	switch req {
	case reqSetVringNum, reqSetVringBase, reqGetVringBase, reqSetVringEnable:
		m.index = binary.NativeEndian.Uint32(p[0:])
		m.num = binary.NativeEndian.Uint32(p[4:])
		if m.index >= numQueues {
			return fmt.Errorf("%w: %d", errIndex, m.index)
		}
	case reqSetVringAddr:
		m.index = binary.NativeEndian.Uint32(p[0:])
		m.addr = vringAddr{
			flags: binary.NativeEndian.Uint32(p[4:]),
			desc:  binary.NativeEndian.Uint64(p[8:]),
			used:  binary.NativeEndian.Uint64(p[16:]),
			avail: binary.NativeEndian.Uint64(p[24:]),
			lg:    binary.NativeEndian.Uint64(p[32:]),
		}
		if m.index >= numQueues {
			return fmt.Errorf("%w: %d", errIndex, m.index)
		}
	case reqSetVringKick, reqSetVringCall, reqSetVringErr:
		m.u64 = binary.NativeEndian.Uint64(p)
		m.index = uint32(m.u64 & 0xff)
		if m.index >= numQueues {
			return fmt.Errorf("%w: %d", errIndex, m.index)
		}
		if m.u64&^uint64(0xff|vringNoFD) != 0 {
			return fmt.Errorf("%w: vring descriptor payload %#x", errPayload, m.u64)
		}
	case reqSetMemTable:
		m.nregions = int(binary.NativeEndian.Uint32(p[0:]))
		for i := 0; i < m.nregions; i++ {
			q := p[8+32*i:]
			m.regions[i] = regionDesc{
				gpa:    binary.NativeEndian.Uint64(q[0:]),
				size:   binary.NativeEndian.Uint64(q[8:]),
				qva:    binary.NativeEndian.Uint64(q[16:]),
				offset: binary.NativeEndian.Uint64(q[24:]),
			}
		}
	default:
		m.u64 = binary.NativeEndian.Uint64(p)
	}
	return nil
}

// fdsWanted returns how many descriptors request m must carry: one per
// region for SET_MEM_TABLE, one for KICK/CALL/ERR unless bit 8 says none,
// one for SET_LOG_FD, and none for the rest.
func fdsWanted(m *msg) int {
	switch m.req {
	case reqSetMemTable:
		return m.nregions
	case reqSetVringKick, reqSetVringCall, reqSetVringErr:
		if m.u64&vringNoFD != 0 {
			return 0
		}
		return 1
	case reqSetLogFD:
		return 1
	}
	return 0
}

// reqName names request r for the log.
func reqName(r uint32) string {
	switch r {
	case reqGetFeatures:
		return "GET_FEATURES"
	case reqSetFeatures:
		return "SET_FEATURES"
	case reqSetOwner:
		return "SET_OWNER"
	case reqResetOwner:
		return "RESET_OWNER"
	case reqSetMemTable:
		return "SET_MEM_TABLE"
	case reqSetLogBase:
		return "SET_LOG_BASE"
	case reqSetLogFD:
		return "SET_LOG_FD"
	case reqSetVringNum:
		return "SET_VRING_NUM"
	case reqSetVringAddr:
		return "SET_VRING_ADDR"
	case reqSetVringBase:
		return "SET_VRING_BASE"
	case reqGetVringBase:
		return "GET_VRING_BASE"
	case reqSetVringKick:
		return "SET_VRING_KICK"
	case reqSetVringCall:
		return "SET_VRING_CALL"
	case reqSetVringErr:
		return "SET_VRING_ERR"
	case reqGetProtocolFeatures:
		return "GET_PROTOCOL_FEATURES"
	case reqSetProtocolFeatures:
		return "SET_PROTOCOL_FEATURES"
	case reqGetQueueNum:
		return "GET_QUEUE_NUM"
	case reqSetVringEnable:
		return "SET_VRING_ENABLE"
	case reqSendRARP:
		return "SEND_RARP"
	case reqGetMaxMemSlots:
		return "GET_MAX_MEM_SLOTS"
	case reqSetStatus:
		return "SET_STATUS"
	case reqGetStatus:
		return "GET_STATUS"
	}
	return fmt.Sprintf("request %d", r)
}

// Capabilities is what --print-capabilities prints: the JSON object a
// vhost-user back end describes itself with (qemu's vhost-user.rst,
// "Backend program conventions"), read by libvirt. A net device has no
// feature list; the layout is the C original's.
const Capabilities = "{\n  \"type\": \"net\"\n}\n"
