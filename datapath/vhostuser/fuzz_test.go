// Fuzz targets: the control protocol (any byte stream from a front end,
// through message assembly, parsing and the state machine) and the
// virtqueues (any guest memory under the rings: descriptors outside the
// regions, loops, lengths past the buffers, runaway indexes), both ways.
// Malformed input must be an error or a dropped chain, never a crash.

package vhostuser

import (
	"encoding/binary"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"gopasst/datapath/tap"
)

// msgBytes encodes one request for the seed corpus.
func msgBytes(req, flags uint32, p []byte) []byte {
	m := make([]byte, hdrLen+len(p))
	binary.NativeEndian.PutUint32(m[0:], req)
	binary.NativeEndian.PutUint32(m[4:], flagVersion|flags)
	binary.NativeEndian.PutUint32(m[8:], uint32(len(p)))
	copy(m[hdrLen:], p)
	return m
}

func FuzzMessages(f *testing.F) {
	var start []byte
	for _, m := range [][]byte{
		msgBytes(reqGetFeatures, 0, nil),
		msgBytes(reqGetProtocolFeatures, 0, nil),
		msgBytes(reqSetProtocolFeatures, 0, u64(pfReplyAck)),
		msgBytes(reqSetOwner, 0, nil),
		msgBytes(reqSetVringCall, 0, u64(vringNoFD)),
		msgBytes(reqSetFeatures, flagNeedReply, u64(Features)),
		msgBytes(reqSetVringNum, flagNeedReply, state(0, 256)),
		msgBytes(reqSetVringBase, 0, state(0, 0)),
		msgBytes(reqSetVringAddr, 0, make([]byte, 40)),
		msgBytes(reqSetVringEnable, 0, state(1, 1)),
		msgBytes(reqGetVringBase, 0, state(1, 0)),
		msgBytes(reqSetStatus, 0, u64(15)),
		msgBytes(reqGetStatus, 0, nil),
	} {
		f.Add(m)
		start = append(start, m...)
	}
	f.Add(start)
	f.Add(msgBytes(reqSetMemTable, 0, append(state(1, 0), make([]byte, 32)...)))
	f.Add(msgBytes(reqSetVringNum, 0, state(0, 300)))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Skip(err)
		}
		defer unix.Close(sp[0])
		unix.SetNonblock(sp[0], true)
		b := New(-1, sp[1], false, 2, nil)
		b.listen = 1 << 20 // a hang-up is EventDown: never accepted on
		defer func() { b.listen = -1; b.Close() }()
		w := &watcher{fds: map[uint32]int{}}
		b.Watch(w)
		unix.Write(sp[0], data)
		unix.Shutdown(sp[0], unix.SHUT_WR)
		var drain [4096]byte
		for i := 0; i < 10000 && b.Connected(); i++ {
			b.Ready(idxConn, unix.EPOLLIN)
			for {
				if n, _ := unix.Read(sp[0], drain[:]); n <= 0 {
					break
				}
			}
			// Whatever state it reached, the datapath calls are safe.
			frames := make([][]byte, 4)
			b.Read(frames)
			copy(b.Frame(), testFrame(100, 0))
			b.Commit(100)
			b.Flush()
		}
	})
}

// fuzzMem is the guest memory of FuzzRings: one region, whose bytes are
// the fuzzer's.
const (
	fuzzGPA  = 0x10000
	fuzzSize = 256 << 10
)

// ringSeed is FuzzRings' starting point: a sane layout of 32-entry
// rings, TX at 0 (descriptors, avail at 2048, used at 3072) with one
// frame, RX at 4096 with 32 buffers of 4 KiB end to end (a direct view
// needs 17).
func ringSeed() []byte {
	seed := make([]byte, 8192)
	put := func(off int, v uint64, n int) {
		for i := 0; i < n; i++ {
			seed[off+i] = byte(v >> (8 * i))
		}
	}
	put(0, fuzzGPA+16384, 8)
	put(8, 12+60, 4)
	put(2048+2, 1, 2)
	for i := 0; i < 32; i++ {
		put(4096+16*i, uint64(fuzzGPA+65536+4096*i), 8)
		put(4096+16*i+8, 4096, 4)
		put(4096+16*i+12, descWrite, 2)
		put(6144+4+2*i, uint64(i), 2)
	}
	put(6144+2, 32, 2)
	return seed
}

// ringSeedSplit is ringSeed with its TX frame a TCP segment long enough
// to be split (tx.go), so that the fuzzer starts inside that path too.
func ringSeedSplit() []byte {
	seed := ringSeed()
	fr := tcpFrame(false, 1500)
	seed = append(seed, make([]byte, 16384+12+len(fr)-len(seed))...)
	copy(seed[16384+12:], fr)
	l := uint32(12 + len(fr))
	seed[8], seed[9] = byte(l), byte(l>>8)
	return seed
}

func FuzzRings(f *testing.F) {
	seed := ringSeed()
	f.Add(uint8(5), uint8(0xff), seed)
	f.Add(uint8(5), uint8(0x5f), seed)
	f.Add(uint8(5), uint8(0), seed)
	f.Add(uint8(4), uint8(0x1f), seed)
	f.Add(uint8(5), uint8(0x5f), ringSeedSplit())
	f.Fuzz(func(t *testing.T, sizeLog, feat uint8, data []byte) { runRings(t, sizeLog, feat, data) })
}

// TestRingSeedDirect checks that FuzzRings' seed reaches both RX paths
// and the TX path, so that the fuzzer starts from inside them.
func TestRingSeedDirect(t *testing.T) {
	st := runRings(t, 5, 0x5f, ringSeed())
	if st.DirectOut == 0 || st.FramesOut <= st.DirectOut || st.FramesIn == 0 {
		t.Fatalf("seed: %+v", st)
	}
	if st := runRings(t, 5, 0x5f, ringSeedSplit()); st.Split == 0 {
		t.Fatalf("split seed: no split frame: %+v", st)
	}
}

// runRings is FuzzRings' body: a back end over the guest memory data, ring
// size 1<<(sizeLog%11), features (and ring addresses) from feat, three
// rounds of Read, Reserve, Commit and Flush. Returns its counters.
func runRings(t *testing.T, sizeLog, feat uint8, data []byte) Stats {
	num := uint16(1) << (sizeLog % 11)
	mem := make([]byte, fuzzSize)
	copy(mem, data)
	b := New(-1, -1, false, 4, nil)
	b.conn = 1 << 20 // "connected": no call on it from the datapath
	defer func() { b.conn = -1; b.Close() }()
	b.mem.r[0] = region{gpa: fuzzGPA, size: fuzzSize, qva: fuzzGPA, mem: mem}
	b.mem.n = 1
	feats := []uint64{fNetMrgRxbuf, fRingEventIdx, fNetGuestCsum, fNetGuestTSO4 | fNetGuestTSO6, fVersion1}
	for i, v := range feats {
		if feat&(1<<i) != 0 {
			b.acked |= v
		}
	}
	b.vnetLen = 10
	if b.acked&(fVersion1|fNetMrgRxbuf) != 0 {
		b.vnetLen = 12
	}
	for q, base := range []uint64{4096, 0} {
		r := &b.vq[q]
		r.num = uint32(num)
		r.descAddr, r.availAddr, r.usedAddr, r.addrSet = fuzzGPA+base, fuzzGPA+base+2048, fuzzGPA+base+3072, true
		if feat&0x80 != 0 && len(data) > 8 {
			// Ring addresses from the data too: misaligned,
			// outside, overlapping.
			r.descAddr = fuzzGPA + uint64(binary.LittleEndian.Uint16(data[0:]))*4
			r.availAddr = fuzzGPA + uint64(binary.LittleEndian.Uint16(data[2:]))
			r.usedAddr = fuzzGPA + uint64(binary.LittleEndian.Uint16(data[4:]))*2
		}
		r.eventIdx = b.acked&fRingEventIdx != 0
		r.resolve(&b.mem)
		r.started, r.enabled = true, true
	}
	frames := make([][]byte, 8)
	iov := make([]unix.Iovec, 2)
	bufs := make([][]byte, 4)
	src := tcpFrame(feat&0x20 != 0, 3000)
	h := tap.VnetHdr{Flags: tap.VnetNeedsCsum, GSOType: tap.GSOTCPv4, GSOSize: 536, CsumStart: 34, CsumOffset: 16}
	if feat&0x20 != 0 {
		h.GSOType, h.CsumStart = tap.GSOTCPv6, 54
	}
	for round := 0; round < 3; round++ {
		n, _ := b.Read(frames)
		for _, fr := range frames[:n] {
			if len(fr) < tap.StreamMinFrame || len(fr) > tap.MaxFrame {
				t.Fatalf("frame of %d bytes handed out", len(fr))
			}
			_ = fr[0] + fr[len(fr)-1]
			// A split frame's payload comes from the guest's
			// buffer: every slice of the frame gives pieces of
			// its length, all readable.
			for _, off := range [...]int{0, 40, 54, 74, len(fr) - 1} {
				if off >= len(fr) {
					continue
				}
				np := b.PayloadIovecs(fr[off:], iov)
				total := 0
				for i := 0; i < np; i++ {
					p := unsafe.Slice(iov[i].Base, iov[i].Len)
					_ = p[0] + p[len(p)-1]
					total += len(p)
				}
				if np < 1 || np > 2 || total != len(fr)-off {
					t.Fatalf("PayloadIovecs of %d bytes: %d pieces, %d bytes", len(fr)-off, np, total)
				}
			}
		}
		k := b.Reserve(bufs)
		for i := 0; i < k; i++ {
			copy(bufs[i], src)
			if i%2 == 0 {
				b.CommitOffload(len(src), &h)
			} else {
				b.Commit(60 + i*700)
			}
		}
		copy(b.Frame(), src)
		b.Commit(len(src))
		b.Flush()
		b.rxKicked()
	}
	return b.Stats
}
