// A minimal vhost-user front end for the package's tests: it plays qemu
// (memfd guest memory, the start-up message sequence qemu 7.2 sends, eventfds
// by SCM_RIGHTS) and the guest's driver (rings laid out in that memory,
// buffers posted, frames read back), and drives the Backend synchronously
// from the test's goroutine: every event the loop would deliver is passed
// to Ready by the test itself.

package vhostuser

import (
	"encoding/binary"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"gopasst/datapath/tap"
)

const (
	feMemSize  = 16 << 20
	feGPA      = 0x4000_0000    // guest physical base: not the mapping's address
	feQVA      = 0x7f00_0000_00 // "qemu's" address of it: different again
	feQueue    = 256
	feRingOff  = 64 << 10 // ring q at q*feRingOff
	feBufOff   = 1 << 20  // buffers from here
	feBufSize  = 4096     // RX buffers
	feTxBufOff = 8 << 20  // TX buffers
)

// watcher records the descriptors the back end watches.
type watcher struct{ fds map[uint32]int }

func (w *watcher) Watch(fd int, _ uint32, idx uint32) error { w.fds[idx] = fd; return nil }
func (w *watcher) Unwatch(fd int) {
	for k, v := range w.fds {
		if v == fd {
			delete(w.fds, k)
		}
	}
}

// frontEnd is the test's qemu and guest.
type frontEnd struct {
	t     *testing.T
	b     *Backend
	w     *watcher
	sock  int // our end of the control socket
	memfd int
	mem   []byte
	kick  [2]int
	call  [2]int
	num   [2]uint32
	// driver state
	availIdx [2]uint16
	usedSeen [2]uint16
	features uint64
	events   tap.Event // accumulated from Ready
	ev       [8]byte   // eventfd values
	freed    []uint16  // RX chains the back end returned (recvRX), to post again
}

// newFrontEnd connects a front end to b (whose listener is not used: the
// socket is handed over as if accepted) and maps its memory.
func newFrontEnd(t *testing.T, b *Backend) *frontEnd {
	t.Helper()
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.SetNonblock(sp[1], true)
	fe := &frontEnd{t: t, b: b, w: &watcher{fds: map[uint32]int{}}, sock: sp[0]}
	b.resetSession()
	b.conn = sp[1]
	if err := b.Watch(fe.w); err != nil {
		t.Fatal(err)
	}
	fe.memfd, err = unix.MemfdCreate("guest", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(fe.memfd, feMemSize); err != nil {
		t.Fatal(err)
	}
	fe.mem, err = unix.Mmap(fe.memfd, 0, feMemSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	for q := 0; q < 2; q++ {
		fe.kick[q], _ = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		fe.call[q], _ = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	}
	t.Cleanup(fe.close)
	return fe
}

func (fe *frontEnd) close() {
	unix.Close(fe.sock)
	unix.Munmap(fe.mem)
	unix.Close(fe.memfd)
	for q := 0; q < 2; q++ {
		unix.Close(fe.kick[q])
		unix.Close(fe.call[q])
	}
}

// send sends request req with payload p and descriptors fds, and has the
// back end process it.
func (fe *frontEnd) send(req, flags uint32, p []byte, fds ...int) {
	fe.t.Helper()
	m := make([]byte, hdrLen+len(p))
	binary.NativeEndian.PutUint32(m[0:], req)
	binary.NativeEndian.PutUint32(m[4:], flagVersion|flags)
	binary.NativeEndian.PutUint32(m[8:], uint32(len(p)))
	copy(m[hdrLen:], p)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(fe.sock, m, oob, nil, 0); err != nil {
		fe.t.Fatalf("send %s: %v", reqName(req), err)
	}
	fe.process()
}

// process has the back end read its control socket.
func (fe *frontEnd) process() error {
	ev, err := fe.b.Ready(idxConn, unix.EPOLLIN)
	fe.events |= ev
	return err
}

// reply reads one reply to req and returns its payload.
func (fe *frontEnd) reply(req uint32) []byte {
	fe.t.Helper()
	b := make([]byte, 64)
	n, err := unix.Read(fe.sock, b)
	if err != nil || n < hdrLen {
		fe.t.Fatalf("reply to %s: %d bytes, %v", reqName(req), n, err)
	}
	if r := binary.NativeEndian.Uint32(b); r != req {
		fe.t.Fatalf("reply to %s: request %d", reqName(req), r)
	}
	if f := binary.NativeEndian.Uint32(b[4:]); f != flagVersion|flagReply {
		fe.t.Fatalf("reply to %s: flags %#x", reqName(req), f)
	}
	return b[hdrLen:n]
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.NativeEndian.PutUint64(b, v)
	return b
}

func state(idx, num uint32) []byte {
	b := make([]byte, 8)
	binary.NativeEndian.PutUint32(b, idx)
	binary.NativeEndian.PutUint32(b[4:], num)
	return b
}

// ringAddr returns the layout of ring q: descriptors, avail, used offsets
// in the memory.
func ringAddr(q int) (desc, avail, used uint64) {
	base := uint64(q * feRingOff)
	return base, base + 16*feQueue, base + 16*feQueue + 4096
}

// start runs qemu 7.2's start-up sequence, acking features (the offered
// ones masked with want), and checks the replies.
func (fe *frontEnd) start(want uint64) {
	fe.t.Helper()
	fe.send(reqGetFeatures, 0, nil)
	if got := binary.NativeEndian.Uint64(fe.reply(reqGetFeatures)); got != Features {
		fe.t.Fatalf("GET_FEATURES %#x, want %#x", got, uint64(Features))
	}
	fe.send(reqGetProtocolFeatures, 0, nil)
	pf := binary.NativeEndian.Uint64(fe.reply(reqGetProtocolFeatures))
	fe.send(reqSetProtocolFeatures, 0, u64(pf&0x1ffff))
	fe.send(reqSetOwner, 0, nil)
	fe.send(reqGetFeatures, 0, nil)
	fe.reply(reqGetFeatures)
	for q := 0; q < 2; q++ {
		fe.send(reqSetVringCall, 0, u64(uint64(q)), fe.call[q])
		fe.send(reqSetVringErr, 0, u64(uint64(q)), fe.call[q])
	}
	fe.features = Features & want
	fe.send(reqSetFeatures, 0, u64(fe.features))
	fe.setMemTable()
	for q := 0; q < 2; q++ {
		fe.setupRing(q, feQueue)
	}
	for q := 0; q < 2; q++ {
		fe.send(reqSetVringEnable, 0, state(uint32(q), 1))
	}
}

func (fe *frontEnd) setMemTable() {
	fe.t.Helper()
	p := make([]byte, 8+32)
	binary.NativeEndian.PutUint32(p, 1)
	binary.NativeEndian.PutUint64(p[8:], feGPA)
	binary.NativeEndian.PutUint64(p[16:], feMemSize)
	binary.NativeEndian.PutUint64(p[24:], feQVA)
	binary.NativeEndian.PutUint64(p[32:], 0)
	fe.send(reqSetMemTable, flagNeedReply, p, fe.memfd)
	if v := binary.NativeEndian.Uint64(fe.reply(reqSetMemTable)); v != 0 {
		fe.t.Fatalf("SET_MEM_TABLE: %d", v)
	}
}

// setupRing configures ring q with size num (zeroing it).
func (fe *frontEnd) setupRing(q int, num uint32) {
	d, a, u := ringAddr(q)
	clear(fe.mem[d : d+feRingOff])
	fe.num[q] = num
	fe.availIdx[q], fe.usedSeen[q] = 0, 0
	fe.send(reqSetVringNum, 0, state(uint32(q), num))
	fe.send(reqSetVringBase, 0, state(uint32(q), 0))
	p := make([]byte, 40)
	binary.NativeEndian.PutUint32(p, uint32(q))
	binary.NativeEndian.PutUint64(p[8:], feQVA+d)
	binary.NativeEndian.PutUint64(p[16:], feQVA+u)
	binary.NativeEndian.PutUint64(p[24:], feQVA+a)
	fe.send(reqSetVringAddr, 0, p)
	fe.send(reqSetVringKick, 0, u64(uint64(q)), fe.kick[q])
	fe.send(reqSetVringCall, 0, u64(uint64(q)), fe.call[q])
}

// desc writes descriptor i of ring q.
func (fe *frontEnd) desc(q int, i uint16, gpa uint64, l uint32, flags, next uint16) {
	d, _, _ := ringAddr(q)
	e := fe.mem[d+16*uint64(i):]
	binary.LittleEndian.PutUint64(e, gpa)
	binary.LittleEndian.PutUint32(e[8:], l)
	binary.LittleEndian.PutUint16(e[12:], flags)
	binary.LittleEndian.PutUint16(e[14:], next)
}

// offer puts head into ring q's avail ring.
func (fe *frontEnd) offer(q int, head uint16) {
	_, a, _ := ringAddr(q)
	slot := uint32(fe.availIdx[q]) % fe.num[q]
	binary.LittleEndian.PutUint16(fe.mem[a+4+2*uint64(slot):], head)
	fe.availIdx[q]++
	binary.LittleEndian.PutUint16(fe.mem[a+2:], fe.availIdx[q])
}

// postRX posts n RX buffers of size bytes each, descriptors 0..n-1, one
// per chain, contiguous from feBufOff.
func (fe *frontEnd) postRX(n int, size uint32) {
	for i := 0; i < n; i++ {
		head := uint16(int(fe.availIdx[rxQ]) % int(fe.num[rxQ]))
		fe.desc(rxQ, head, feGPA+feBufOff+uint64(head)*uint64(size), size, descWrite, 0)
		fe.offer(rxQ, head)
	}
}

// repostRX posts again the RX chains recvRX saw returned, as a driver
// refills its ring (their descriptors unchanged).
func (fe *frontEnd) repostRX() {
	for _, h := range fe.freed {
		fe.offer(rxQ, h)
	}
	fe.freed = fe.freed[:0]
}

// usedIdx reads ring q's used index.
func (fe *frontEnd) usedIdx(q int) uint16 {
	_, _, u := ringAddr(q)
	return binary.LittleEndian.Uint16(fe.mem[u+2:])
}

// usedEntry reads used entry k (free-running) of ring q.
func (fe *frontEnd) usedEntry(q int, k uint16) (id, l uint32) {
	_, _, u := ringAddr(q)
	e := fe.mem[u+4+8*uint64(uint32(k)%fe.num[q]):]
	return binary.LittleEndian.Uint32(e), binary.LittleEndian.Uint32(e[4:])
}

// gpaBytes returns the test's view of guest physical range [gpa, gpa+l).
func (fe *frontEnd) gpaBytes(gpa uint64, l int) []byte {
	o := gpa - feGPA
	return fe.mem[o : o+uint64(l)]
}

// recvRX collects the frames the back end completed on the RX ring
// (buffers laid out by postRX with size bytes each): each frame's
// virtio-net header and bytes.
func (fe *frontEnd) recvRX(size uint32) (hdrs [][]byte, frames [][]byte) {
	d, _, _ := ringAddr(rxQ)
	for fe.usedSeen[rxQ] != fe.usedIdx(rxQ) {
		id, l := fe.usedEntry(rxQ, fe.usedSeen[rxQ])
		fe.usedSeen[rxQ]++
		fe.freed = append(fe.freed, uint16(id))
		gpa := binary.LittleEndian.Uint64(fe.mem[d+16*uint64(id):])
		buf := fe.gpaBytes(gpa, int(l))
		if l < 12 {
			fe.t.Fatalf("RX used entry of %d bytes", l)
		}
		h := append([]byte(nil), buf[:12]...)
		f := append([]byte(nil), buf[12:]...)
		nb := binary.LittleEndian.Uint16(h[10:])
		for k := 1; k < int(nb); k++ {
			id, l := fe.usedEntry(rxQ, fe.usedSeen[rxQ])
			fe.usedSeen[rxQ]++
			fe.freed = append(fe.freed, uint16(id))
			gpa := binary.LittleEndian.Uint64(fe.mem[d+16*uint64(id):])
			f = append(f, fe.gpaBytes(gpa, int(l))...)
		}
		hdrs = append(hdrs, h)
		frames = append(frames, f)
	}
	return
}

// sendTX puts frame f (after a zero virtio-net header) into TX descriptor
// i, in split pieces of at most piece bytes each (0: one descriptor), and
// kicks.
func (fe *frontEnd) sendTX(i uint16, f []byte, piece int) {
	gpa := feGPA + feTxBufOff + uint64(i)*0x12000
	buf := fe.gpaBytes(gpa, 12+len(f))
	clear(buf[:12])
	copy(buf[12:], f)
	total := 12 + len(f)
	if piece == 0 {
		piece = total
	}
	head := i
	d := i
	for off := 0; off < total; off += piece {
		l := min(piece, total-off)
		var flags, next uint16
		if off+l < total {
			flags, next = descNext, d+1
		}
		fe.desc(txQ, d, gpa+uint64(off), uint32(l), flags, next)
		d++
	}
	fe.offer(txQ, head)
	fe.kickQ(txQ)
}

func (fe *frontEnd) kickQ(q int) {
	fe.ev = [8]byte{1}
	unix.Write(fe.kick[q], fe.ev[:])
}

// calls drains ring q's call eventfd: how many interrupts since last asked.
func (fe *frontEnd) calls(q int) uint64 {
	if n, _ := unix.Read(fe.call[q], fe.ev[:]); n != 8 {
		return 0
	}
	return binary.NativeEndian.Uint64(fe.ev[:])
}

// memAddr returns the host address of guest physical address gpa in the
// back end's mapping (to check views).
func (fe *frontEnd) inBackendMem(b []byte) bool {
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	for i := 0; i < fe.b.mem.n; i++ {
		r := &fe.b.mem.r[i]
		s := uintptr(unsafe.Pointer(unsafe.SliceData(r.mem)))
		if p >= s && p < s+uintptr(len(r.mem)) {
			return true
		}
	}
	return false
}
