// Tests of the batch structures: the frame queue's slots, headroom and
// alignment, and message headers that a real recvmmsg and sendmmsg fill
// and read. The system calls are made raw here, as datapath/sys makes
// them: this package imports no package of ours, its tests neither.

package batch

import (
	"bytes"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestFrames: slots are filled in order, committed lengths come back with
// and without headroom, the headroom sits right before each frame, slots
// are 64-byte aligned and never overlap, and a full queue gives no slot.
func TestFrames(t *testing.T) {
	const frame, head = 1500, 10
	f := NewFrames(3, frame, head)
	if f.Cap() != 3 || f.Len() != 0 || f.Full() {
		t.Fatalf("new queue: cap %d len %d full %v", f.Cap(), f.Len(), f.Full())
	}
	for i := 0; i < 3; i++ {
		b := f.Next()
		if len(b) != cap(b) || len(b) < frame || &b[0] != &f.Slot(i)[0] {
			t.Fatalf("slot %d: %d/%d bytes, same as Slot: %v", i, len(b), cap(b), &b[0] == &f.Slot(i)[0])
		}
		if off := uintptr(unsafe.Pointer(&f.Headroom(i)[0])) % 64; off != 0 {
			t.Fatalf("slot %d: headroom not 64-byte aligned (%d)", i, off)
		}
		hr := f.Headroom(i)
		if len(hr) != head || cap(hr) != head || uintptr(unsafe.Pointer(&hr[0]))+head != uintptr(unsafe.Pointer(&b[0])) {
			t.Fatalf("slot %d: headroom of %d bytes not right before the frame", i, len(hr))
		}
		copy(hr, bytes.Repeat([]byte{0xee}, head))
		copy(b, bytes.Repeat([]byte{byte(i + 1)}, 100+i))
		f.Commit(100 + i)
	}
	if !f.Full() || f.Next() != nil || f.Len() != 3 {
		t.Fatalf("full queue: full %v, next %v, len %d", f.Full(), f.Next() != nil, f.Len())
	}
	for i := 0; i < 3; i++ {
		want := bytes.Repeat([]byte{byte(i + 1)}, 100+i)
		if !bytes.Equal(f.Frame(i), want) {
			t.Fatalf("frame %d changed", i)
		}
		wh := f.WithHeadroom(i)
		if len(wh) != head+100+i || !bytes.Equal(wh[:head], bytes.Repeat([]byte{0xee}, head)) || !bytes.Equal(wh[head:], want) {
			t.Fatalf("frame %d with headroom: % x...", i, wh[:head+2])
		}
	}
	f.Reset()
	if f.Len() != 0 || f.Full() || &f.Next()[0] != &f.Slot(0)[0] {
		t.Fatal("reset queue does not start over")
	}
}

// TestFramesNoAllocs: using the queue allocates nothing.
func TestFramesNoAllocs(t *testing.T) {
	f := NewFrames(4, 1500, 4)
	if n := testing.AllocsPerRun(100, func() {
		for !f.Full() {
			b := f.Next()
			b[0] = 1
			f.Commit(60)
		}
		_ = f.WithHeadroom(3)
		f.Reset()
	}); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

// TestMsgs: headers built by NewMsgs, pointed at buffers with SetBuf and
// given names with WithNames, carry datagrams through real sendmmsg and
// recvmmsg calls on loopback; ResetNames restores the name lengths that a
// receive shrank.
func TestMsgs(t *testing.T) {
	rx := udpSocket(t)
	tx := udpSocket(t)
	var rxAddr unix.RawSockaddrInet4
	l := uint32(unsafe.Sizeof(rxAddr))
	if _, _, e := unix.RawSyscall(unix.SYS_GETSOCKNAME, uintptr(rx), uintptr(unsafe.Pointer(&rxAddr)), uintptr(unsafe.Pointer(&l))); e != 0 {
		t.Fatal(e)
	}

	out := NewMsgs(3, 1)
	out.WithNames()
	payloads := [][]byte{[]byte("one"), []byte("two!"), []byte("three")}
	for i, p := range payloads {
		out.SetBuf(i, p)
		*(*unix.RawSockaddrInet4)(unsafe.Pointer(&out.Names[i])) = rxAddr
		out.Hdrs[i].Hdr.Namelen = uint32(unsafe.Sizeof(rxAddr))
	}
	if n := mmsg(t, unix.SYS_SENDMMSG, tx, out, 3); n != 3 {
		t.Fatalf("sendmmsg sent %d of 3", n)
	}

	in := NewMsgs(4, 1)
	in.WithNames()
	bufs := make([][]byte, 4)
	for i := range bufs {
		bufs[i] = make([]byte, 64)
		in.SetBuf(i, bufs[i])
	}
	in.ResetNames(4)
	n := mmsg(t, unix.SYS_RECVMMSG, rx, in, 4)
	if n != 3 {
		t.Fatalf("recvmmsg got %d of 3", n)
	}
	var txAddr unix.RawSockaddrInet4
	l = uint32(unsafe.Sizeof(txAddr))
	unix.RawSyscall(unix.SYS_GETSOCKNAME, uintptr(tx), uintptr(unsafe.Pointer(&txAddr)), uintptr(unsafe.Pointer(&l)))
	for i := 0; i < n; i++ {
		h := &in.Hdrs[i]
		if got := bufs[i][:h.Len]; !bytes.Equal(got, payloads[i]) {
			t.Fatalf("datagram %d: %q, want %q", i, got, payloads[i])
		}
		if h.Hdr.Namelen != unix.SizeofSockaddrInet4 {
			t.Fatalf("datagram %d: name of %d bytes", i, h.Hdr.Namelen)
		}
		if from := *(*unix.RawSockaddrInet4)(unsafe.Pointer(&in.Names[i])); from.Port != txAddr.Port || from.Addr != txAddr.Addr {
			t.Fatalf("datagram %d from %v:%d, want the sender", i, from.Addr, from.Port)
		}
	}
	in.ResetNames(n)
	if in.Hdrs[0].Hdr.Namelen != uint32(unsafe.Sizeof(in.Names[0])) {
		t.Fatal("ResetNames left the shrunk length")
	}
}

// udpSocket returns a non-blocking UDP socket bound to 127.0.0.1, closed
// with the test.
func udpSocket(t *testing.T) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	return fd
}

// mmsg makes sendmmsg or recvmmsg (nr) on fd with the first n headers of
// m, and returns how many messages went, failing t on an error.
func mmsg(t *testing.T, nr uintptr, fd int, m *Msgs, n int) int {
	t.Helper()
	r, _, e := unix.Syscall6(nr, uintptr(fd), uintptr(unsafe.Pointer(&m.Hdrs[0])), uintptr(n), unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		t.Fatalf("syscall %d: %v", nr, e)
	}
	return int(r)
}
