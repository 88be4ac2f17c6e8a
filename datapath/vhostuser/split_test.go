// Tests of split TX frames (tx.go): a TCP segment's headers copied, its
// payload written from the guest's buffer through PayloadIovecs; every
// other frame copied whole.

package vhostuser

import (
	"bytes"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"gopasst/datapath/tap"
)

// iovBytes returns the bytes iov[:n] point at, joined.
func iovBytes(iov []unix.Iovec, n int) []byte {
	var out []byte
	for i := 0; i < n; i++ {
		out = append(out, unsafe.Slice(iov[i].Base, iov[i].Len)...)
	}
	return out
}

// TestTXSplit: a bulk TCP segment (IPv4 and IPv6) in one guest buffer is
// split: its headers are private (the guest clearing them after Read
// changes nothing read), PayloadIovecs gives its payload from the guest's
// buffer (one piece, or two for a slice that starts in the headers), and
// bytes outside the frames come back as they are. A small segment, a
// segment scattered over buffers and a frame of another EtherType are
// copied whole.
func TestTXSplit(t *testing.T) {
	b := newBackend(t)
	fe := newFrontEnd(t, b)
	fe.start(allBut)
	frames := make([][]byte, 64)
	iov := make([]unix.Iovec, 2)
	cases := []struct {
		name  string
		f     []byte
		piece int
		split bool
	}{
		{"tcp4 bulk", tcpFrame(false, 60000), 0, true},
		{"tcp6 bulk", tcpFrame(true, 8000), 0, true},
		{"tcp4 small", tcpFrame(false, 500), 0, false},
		{"tcp4 scattered", tcpFrame(false, 60000), 4096, false},
		{"other", testFrame(9000, 3), 0, false},
	}
	var splits uint64
	for i, tc := range cases {
		f := tc.f
		slot := uint16(i * 20)
		fe.sendTX(slot, f, tc.piece)
		b.Ready(idxKick+txQ, unix.EPOLLIN)
		if got, _ := b.Read(frames); got != 1 {
			t.Fatalf("%s: Read: %d frames", tc.name, got)
		}
		fr := frames[0]
		if len(fr) != len(f) || fe.inBackendMem(fr) {
			t.Fatalf("%s: frame of %d bytes (sent %d), in guest memory %v", tc.name, len(fr), len(f), fe.inBackendMem(fr))
		}
		if tc.split {
			splits++
		}
		if b.Stats.Split != splits {
			t.Fatalf("%s: %d split frames, want %d", tc.name, b.Stats.Split, splits)
		}
		hl := 14 + 20 + 20
		if f[12] == 0x86 {
			hl = 14 + 40 + 20
		}
		if !tc.split {
			if !bytes.Equal(fr, f) {
				t.Fatalf("%s: copied frame differs", tc.name)
			}
			if n := b.PayloadIovecs(fr[hl:], iov); n != 1 || !bytes.Equal(iovBytes(iov, n), f[hl:]) ||
				iov[0].Base != &fr[hl] {
				t.Fatalf("%s: PayloadIovecs of a copied frame: %d pieces", tc.name, n)
			}
		} else {
			if !bytes.Equal(fr[:hl], f[:hl]) {
				t.Fatalf("%s: headers differ", tc.name)
			}
			n := b.PayloadIovecs(fr[hl:], iov)
			if n != 1 || !fe.inBackendMem(unsafe.Slice(iov[0].Base, iov[0].Len)) || !bytes.Equal(iovBytes(iov, n), f[hl:]) {
				t.Fatalf("%s: payload: %d pieces, from guest memory %v", tc.name, n, fe.inBackendMem(unsafe.Slice(iov[0].Base, iov[0].Len)))
			}
			// A slice from inside the payload, one from the
			// headers on, one in the headers only.
			if n := b.PayloadIovecs(fr[hl+100:len(fr)-7], iov); n != 1 || !bytes.Equal(iovBytes(iov, n), f[hl+100:len(f)-7]) {
				t.Fatalf("%s: inner slice: %d pieces", tc.name, n)
			}
			if n := b.PayloadIovecs(fr[hl-6:], iov); n != 2 || !bytes.Equal(iovBytes(iov, n), f[hl-6:]) {
				t.Fatalf("%s: slice across the headers' end: %d pieces", tc.name, n)
			}
			if n := b.PayloadIovecs(fr[2:hl], iov); n != 1 || iov[0].Base != &fr[2] {
				t.Fatalf("%s: slice of the headers: %d pieces", tc.name, n)
			}
			// The guest rewriting its buffer: the headers we read
			// stay; the payload is its own to change.
			buf := fe.gpaBytes(feGPA+feTxBufOff+uint64(slot)*0x12000, 12+len(f))
			clear(buf)
			if !bytes.Equal(fr[:hl], f[:hl]) {
				t.Fatalf("%s: headers changed with the guest's buffer", tc.name)
			}
			if n := b.PayloadIovecs(fr[hl:], iov); n != 1 || !bytes.Equal(iovBytes(iov, n), make([]byte, len(f)-hl)) {
				t.Fatalf("%s: payload not read from the guest's buffer", tc.name)
			}
		}
		other := make([]byte, 100)
		if n := b.PayloadIovecs(other, iov); n != 1 || iov[0].Base != &other[0] {
			t.Fatalf("%s: a slice outside the arena: %d pieces", tc.name, n)
		}
		b.Flush()
		// After Flush the views are gone: the frame's payload slice
		// is given as it is.
		if n := b.PayloadIovecs(fr[hl:], iov); n != 1 || iov[0].Base != &fr[hl] {
			t.Fatalf("%s: a view of guest memory kept after Flush", tc.name)
		}
		if fe.usedIdx(txQ) != uint16(i+1) {
			t.Fatalf("%s: TX used index %d", tc.name, fe.usedIdx(txQ))
		}
	}
}

// TestTXSplitBatch: in one Read of split and copied frames mixed, each
// frame's payload comes from its own buffer.
func TestTXSplitBatch(t *testing.T) {
	b := newBackend(t)
	fe := newFrontEnd(t, b)
	fe.start(allBut)
	var sent [][]byte
	for i := 0; i < 12; i++ {
		var f []byte
		switch i % 3 {
		case 0:
			f = tcpFrame(false, 2000+i*1000)
		case 1:
			f = testFrame(3000, byte(i))
		default:
			f = tcpFrame(true, 1500+i*100)
		}
		f[len(f)-1] = byte(i) // tell the payloads apart
		sent = append(sent, f)
		fe.sendTX(uint16(i*4), f, 0)
	}
	b.Ready(idxKick+txQ, unix.EPOLLIN)
	frames := make([][]byte, tap.RxBatch)
	got, _ := b.Read(frames)
	if got != len(sent) || b.Stats.Split != 8 {
		t.Fatalf("Read %d frames, %d split", got, b.Stats.Split)
	}
	iov := make([]unix.Iovec, 2)
	for i, f := range sent {
		n := b.PayloadIovecs(frames[i][40:], iov)
		if !bytes.Equal(iovBytes(iov, n), f[40:]) {
			t.Fatalf("frame %d: bytes from %d pieces differ", i, n)
		}
	}
	b.Flush()
}
