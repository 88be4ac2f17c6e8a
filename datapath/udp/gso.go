// Guest to host with UDP segmentation offload: a flow's run of equal-size
// guest datagrams leaves as one message carrying UDP_SEGMENT, so the host
// stack builds, routes and (on loopback) delivers one super-datagram where
// it would handle dozens of small ones; the kernel cuts it into the guest's
// datagrams again (at the device, or at the receiving socket).
package udp

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// gsoMaxSegs bounds the datagrams of one UDP_SEGMENT message: the
	// kernel's UDP_MAX_SEGMENTS, 64 before Linux 6.13 (128 since).
	gsoMaxSegs = 64
	// gsoMaxBytes bounds the payload of one UDP_SEGMENT message: the
	// super-datagram must fit the IP length field (65535 bytes of IPv4
	// packet, less the IPv4 and UDP headers; IPv6 allows 20 more, which
	// we leave unused).
	gsoMaxBytes = 65535 - 20 - 8
)

// gsoCtrlLen is the control buffer of one message: a cmsghdr and the
// 16-bit segment size, padded (CMSG_SPACE(sizeof(uint16_t))).
var gsoCtrlLen = unix.CmsgSpace(2)

// gsoMsgs is a preallocated sendmmsg array for one flow's run: message m
// carries datagrams first[m] .. first[m]+segs[m]-1 of the run, one iovec
// each (iovec k is datagram k of the run), with a UDP_SEGMENT control
// message when it carries more than one.
type gsoMsgs struct {
	hdrs  []unix.Mmsghdr
	iov   []unix.Iovec
	ctrl  []byte
	segs  []int32
	first []int32
}

// newGSOMsgs allocates room for runs of up to n datagrams.
func newGSOMsgs(n int) gsoMsgs {
	g := gsoMsgs{
		hdrs:  make([]unix.Mmsghdr, n),
		iov:   make([]unix.Iovec, n),
		ctrl:  make([]byte, n*gsoCtrlLen),
		segs:  make([]int32, n),
		first: make([]int32, n),
	}
	for m := 0; m < n; m++ {
		c := (*unix.Cmsghdr)(unsafe.Pointer(&g.ctrl[m*gsoCtrlLen]))
		c.Level = unix.SOL_UDP
		c.Type = unix.UDP_SEGMENT
		c.SetLen(unix.CmsgLen(2))
	}
	return g
}

// build lays the datagrams of run out as messages: consecutive datagrams
// share a message while they have the size of its first one, up to
// maxSegs datagrams and gsoMaxBytes bytes; a shorter datagram may end a
// message (the kernel's last segment may be short), an empty one travels
// alone (UDP_SEGMENT cannot carry it).
//
// run: the payloads, at most len(g.hdrs); maxSegs: 1 for no segmentation
// offload. Returns the number of messages.
func (g *gsoMsgs) build(run [][]byte, maxSegs int) int {
	m := 0
	for i := 0; i < len(run); m++ {
		seg := len(run[i])
		j, total := i+1, seg
		if seg > 0 {
			for j < len(run) && j-i < maxSegs {
				l := len(run[j])
				if l == 0 || l > seg || total+l > gsoMaxBytes {
					break
				}
				total += l
				j++
				if l < seg {
					break
				}
			}
		}
		for k := i; k < j; k++ {
			g.iov[k].Base = unsafe.SliceData(run[k])
			g.iov[k].SetLen(len(run[k]))
		}
		h := &g.hdrs[m].Hdr
		h.Iov = &g.iov[i]
		h.Iovlen = uint64(j - i)
		if j-i > 1 {
			c := g.ctrl[m*gsoCtrlLen : (m+1)*gsoCtrlLen]
			binary.NativeEndian.PutUint16(c[unix.CmsgLen(0):], uint16(seg))
			h.Control = &c[0]
			h.SetControllen(gsoCtrlLen)
		} else {
			h.Control = nil
			h.SetControllen(0)
		}
		g.segs[m], g.first[m] = int32(j-i), int32(i)
		i = j
	}
	return m
}

// count returns how many datagrams messages from..to-1 carry.
func (g *gsoMsgs) count(from, to int) uint64 {
	n := uint64(0)
	for m := from; m < to; m++ {
		n += uint64(g.segs[m])
	}
	return n
}

// gsoRefused reports whether a send error means the kernel will not
// segment for this socket (no UDP_SEGMENT: EINVAL or ENOPROTOOPT; a segment
// larger than the path MTU: EINVAL; a device or transform without
// checksum offload: EIO), so that the datagrams must go one by one.
func gsoRefused(err unix.Errno) bool {
	switch err {
	case unix.EINVAL, unix.EIO, unix.EOPNOTSUPP, unix.ENOPROTOOPT, unix.EMSGSIZE:
		return true
	}
	return false
}
