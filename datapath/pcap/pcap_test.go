// Tests of the capture writer: frames read back by our own reader and by
// tshark, snap length cut, batches, and no allocation per frame.
package pcap

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// rec is one record as read back.
type rec struct {
	sec, usec, caplen, origlen uint32
	data                       []byte
}

// readFile parses a classic pcap file written in host byte order.
func readFile(t *testing.T, path string) []rec {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 24 {
		t.Fatalf("file of %d bytes", len(b))
	}
	ne := binary.NativeEndian
	if ne.Uint32(b) != Magic || ne.Uint16(b[4:]) != 2 || ne.Uint16(b[6:]) != 4 || ne.Uint32(b[8:]) != 0 ||
		ne.Uint32(b[12:]) != 0 || ne.Uint32(b[16:]) != 65535 || ne.Uint32(b[20:]) != 1 {
		t.Fatalf("global header % x", b[:24])
	}
	var out []rec
	for b = b[24:]; len(b) > 0; {
		if len(b) < 16 {
			t.Fatalf("%d trailing bytes", len(b))
		}
		r := rec{ne.Uint32(b), ne.Uint32(b[4:]), ne.Uint32(b[8:]), ne.Uint32(b[12:]), nil}
		if int(r.caplen) > len(b)-16 || r.caplen > r.origlen || r.usec >= 1e6 {
			t.Fatalf("record header %+v", r)
		}
		r.data = b[16 : 16+r.caplen]
		out = append(out, r)
		b = b[16+r.caplen:]
	}
	return out
}

// frame returns an n-byte test frame: broadcast, IPv4 EtherType, pattern.
func frame(n int) []byte {
	f := make([]byte, n)
	for i := range f {
		f[i] = byte(i * 7)
	}
	if n >= 14 {
		copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55, 0x08, 0x06})
	}
	return f
}

func TestWriteReadBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.pcap")
	w, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	sizes := []int{42, 60, 1514, 65535 + 14}
	before := time.Now().Unix()
	for _, n := range sizes[:2] {
		if err := w.Write(frame(n)); err != nil {
			t.Fatal(err)
		}
	}
	var batch [][]byte
	for _, n := range sizes[2:] {
		batch = append(batch, frame(n))
	}
	for i := 0; i < 70; i++ { // more than one writev
		batch = append(batch, frame(64+i))
	}
	if err := w.WriteBatch(batch); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	recs := readFile(t, path)
	want := append(append([]int{}, sizes...), func() []int {
		var s []int
		for i := 0; i < 70; i++ {
			s = append(s, 64+i)
		}
		return s
	}()...)
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d", len(recs), len(want))
	}
	for i, r := range recs {
		n := want[i]
		c := min(n, 65535)
		if int(r.origlen) != n || int(r.caplen) != c || !bytes.Equal(r.data, frame(n)[:c]) {
			t.Errorf("record %d: caplen %d origlen %d", i, r.caplen, r.origlen)
		}
		if int64(r.sec) < before || int64(r.sec) > time.Now().Unix() {
			t.Errorf("record %d: time %d", i, r.sec)
		}
	}

	// tshark, if installed, must read the same lengths.
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Skip("tshark not installed")
	}
	cmd := exec.Command("tshark", "-r", path, "-T", "fields", "-e", "frame.len", "-e", "frame.cap_len")
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	got, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	var exp strings.Builder
	for _, n := range want {
		fmt.Fprintf(&exp, "%d\t%d\n", n, min(n, 65535))
	}
	if string(got) != exp.String() {
		t.Fatalf("tshark read\n%s\nwant\n%s", got, exp.String())
	}
}

func TestOpenError(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "no", "such", "dir")); err == nil ||
		!strings.Contains(err.Error(), "no such") {
		t.Fatalf("error %v", err)
	}
}

func TestNoAllocs(t *testing.T) {
	w, err := Open(filepath.Join(t.TempDir(), "a.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	f := frame(1514)
	batch := [][]byte{f, f[:60], f[:100]}
	if a := testing.AllocsPerRun(100, func() {
		if w.Write(f) != nil || w.WriteBatch(batch) != nil {
			t.Fatal("write failed")
		}
	}); a != 0 {
		t.Fatalf("%v allocations per write", a)
	}
}
