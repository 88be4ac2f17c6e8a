// Host to guest with segmentation offload: when the guest back end takes
// GSO frames (a tap with a virtio-net header), a flow's datagrams are read
// in one recvmmsg into a staging area and runs of equal size are copied
// into one frame each, marked GSO_UDP_L4, so that one write to the tap
// carries up to 64 datagrams and the guest's kernel handles one packet
// where it would handle dozens (it cuts the frame into the datagrams at
// the receiving socket). Copying a small datagram costs far less than the
// write and the trip through the guest's stack that it saves; large
// datagrams (two do not fit in a frame) are read straight into frames as
// without offloads.
package udp

import (
	"net/netip"

	"golang.org/x/sys/unix"

	"gopasst/batch"
	"gopasst/datapath/sys"
)

const (
	// stageBatch is how many datagrams one recvmmsg reads into the
	// staging area: enough for a full GSO frame of small datagrams.
	stageBatch = gsoMaxSegs
	// stageSlot is the staging room per datagram: the largest UDP
	// payload, so that no datagram is truncated.
	stageSlot = 65536
	// stageMaxSize is the largest datagram worth staging: two of them
	// still fit in one frame. A flow whose last datagram was larger is
	// read straight into frames.
	stageMaxSize = gsoMaxBytes / 2
)

// stage is the staging area: stageBatch message headers, each with a
// stageSlot buffer and an address buffer.
type stage struct {
	msgs *batch.Msgs
	mem  []byte
}

// newStage allocates the staging area (its pages are only touched as far
// as datagrams fill them).
func newStage() *stage {
	st := &stage{msgs: batch.NewMsgs(stageBatch, 1), mem: make([]byte, stageBatch*stageSlot)}
	st.msgs.WithNames()
	for j := 0; j < stageBatch; j++ {
		st.msgs.SetBuf(j, st.mem[j*stageSlot:(j+1)*stageSlot])
	}
	return st
}

// datagram returns staged datagram j, l bytes long.
func (st *stage) datagram(j, l int) []byte {
	return st.mem[j*stageSlot : j*stageSlot+l]
}

// valid returns the length of staged datagram j, and whether it is whole
// and from peer:port (see readFlow for why it may not be).
func (st *stage) valid(j int, peer netip.Addr, port uint16) (int, bool) {
	mh := &st.msgs.Hdrs[j]
	if mh.Hdr.Flags&unix.MSG_TRUNC != 0 {
		return 0, false
	}
	src, sport, err := parseSockaddr(nameBytes(&st.msgs.Names[j], mh.Hdr.Namelen))
	return int(mh.Len), err == nil && src == peer && sport == port
}

// readFlowStaged moves every datagram queued on f's socket to the guest
// through the staging area: each run of consecutive datagrams of one size
// (the last of a run may be shorter), up to gsoMaxSegs datagrams and
// gsoMaxBytes bytes, becomes one frame.
func (h *Handler) readFlowStaged(f *udpFlow) {
	st := h.stage
	hdr := hdrLen(f.ep.v6)
	peer := netip.AddrFrom16(f.host).Unmap()
	for round := 0; round < maxRounds; round++ {
		st.msgs.ResetNames(stageBatch)
		m, e := sys.Recvmmsg(int(f.fd), st.msgs.Hdrs[:stageBatch], unix.MSG_DONTWAIT)
		if e != 0 || m == 0 {
			return
		}
		sent := 0
		for j := 0; j < m; {
			seg, ok := st.valid(j, peer, f.hostPort)
			b := h.out.Frame()
			lim := maxPayload(len(b), hdr)
			if !ok || seg > lim {
				h.Stats.ToGuestDropped++
				j++
				continue
			}
			lim = min(lim, gsoMaxBytes)
			copy(b[hdr:], st.datagram(j, seg))
			total, k, last := seg, 1, seg
			for j++; seg > 0 && j < m && k < gsoMaxSegs; j++ {
				l, ok := st.valid(j, peer, f.hostPort)
				if !ok || l == 0 || l > seg || total+l > lim {
					break // j starts the next frame (or is dropped)
				}
				copy(b[hdr+total:], st.datagram(j, l))
				total += l
				k++
				last = l
				if l < seg {
					j++
					break
				}
			}
			h.commit(f.ep.v6, h.fill(&f.ep, b, total, true), seg, k)
			if k > 1 {
				h.Stats.ToGuestGSO++
			}
			sent += k
			f.inSize = int32(last)
		}
		if sent > 0 {
			h.Stats.ToGuest += uint64(sent)
			inc(&f.hostSent)
			if sent > 1 {
				inc(&f.hostSent)
			}
			f.last = h.l.Now()
		}
		if m < stageBatch {
			return
		}
	}
}
