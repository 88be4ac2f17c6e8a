// Package pcap records the frames exchanged with the guest in a capture
// file (--pcap), in the classic libpcap format: a 24-byte global header
// (microsecond timestamps, link type Ethernet, snap length 65535), then per
// frame a 16-byte record header and the frame bytes.
//
// # Theory of operation
//
// The file is opened at start-up, before the sandbox takes the file
// system away; after that only writev(2) on its descriptor is needed. Each
// record is written with one writev: a record header from an array held
// by the Writer and the frame itself, straight from the caller's buffer,
// so recording copies nothing and allocates nothing. WriteBatch does the
// same for up to batchMax frames per call. Fields are in host byte order,
// which the magic number tells readers. Frames longer than the snap length
// are cut, their original length kept in the record header.
//
// A Writer belongs to the event loop's thread: it is not safe for
// concurrent use.
package pcap

import (
	"encoding/binary"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/datapath/sys"
)

// File format constants (libpcap, "classic" format).
const (
	Magic        = 0xa1b2c3d4 // microsecond timestamps, in host byte order
	VersionMajor = 2
	VersionMinor = 4
	SnapLen      = 65535
	LinkEthernet = 1
	globalLen    = 24
	recordLen    = 16
)

// batchMax is the number of frames one writev of WriteBatch carries
// (two iovecs per frame, well under IOV_MAX).
const batchMax = 64

// Writer appends frames to a capture file.
type Writer struct {
	f   *os.File
	fd  int
	hdr [batchMax][recordLen]byte
	iov [2 * batchMax]unix.Iovec
}

// Open creates (or truncates) the capture file at path, mode 0600 as the C
// original, and writes the global header.
//
// path: the --pcap argument. Returns the Writer, or an error naming the
// path.
func Open(path string) (*Writer, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("pcap: %w", err)
	}
	return FromFile(f)
}

// FromFile writes the global header to f, a capture file opened (empty) by
// the caller, possibly in another process before the sandbox, and returns
// its Writer. On error f is closed.
func FromFile(f *os.File) (*Writer, error) {
	path := f.Name()
	var h [globalLen]byte
	binary.NativeEndian.PutUint32(h[0:], Magic)
	binary.NativeEndian.PutUint16(h[4:], VersionMajor)
	binary.NativeEndian.PutUint16(h[6:], VersionMinor)
	// thiszone and sigfigs: 0
	binary.NativeEndian.PutUint32(h[16:], SnapLen)
	binary.NativeEndian.PutUint32(h[20:], LinkEthernet)
	if _, err := f.Write(h[:]); err != nil {
		f.Close()
		return nil, fmt.Errorf("pcap: writing header to %s: %w", path, err)
	}
	return &Writer{f: f, fd: int(f.Fd())}, nil
}

// record fills record header i for frame and points iovecs 2i and 2i+1 at
// it and at the captured part of the frame.
//
// i: slot; frame: the frame; sec, usec: timestamp. Returns the bytes the
// two iovecs cover.
func (w *Writer) record(i int, frame []byte, sec, usec uint32) int {
	c := min(len(frame), SnapLen)
	h := &w.hdr[i]
	binary.NativeEndian.PutUint32(h[0:], sec)
	binary.NativeEndian.PutUint32(h[4:], usec)
	binary.NativeEndian.PutUint32(h[8:], uint32(c))
	binary.NativeEndian.PutUint32(h[12:], uint32(len(frame)))
	w.iov[2*i].Base = &h[0]
	w.iov[2*i].SetLen(recordLen)
	w.iov[2*i+1].SetLen(c)
	if c > 0 {
		w.iov[2*i+1].Base = &frame[0]
	} else {
		w.iov[2*i+1].Base = nil
	}
	return recordLen + c
}

// now returns the current time as pcap seconds and microseconds.
func now() (uint32, uint32) {
	t := time.Now()
	return uint32(t.Unix()), uint32(t.Nanosecond() / 1000)
}

// Write records one frame, timestamped now.
//
// frame: the Ethernet frame. Returns an error if the write failed or was
// short (the file is then likely truncated mid-record).
func (w *Writer) Write(frame []byte) error {
	sec, usec := now()
	total := w.record(0, frame, sec, usec)
	return w.flush(2, total)
}

// WriteBatch records frames with one timestamp, batchMax frames per
// writev.
//
// frames: the Ethernet frames. Returns the first error.
func (w *Writer) WriteBatch(frames [][]byte) error {
	sec, usec := now()
	for len(frames) > 0 {
		n := min(len(frames), batchMax)
		total := 0
		for i, f := range frames[:n] {
			total += w.record(i, f, sec, usec)
		}
		if err := w.flush(2*n, total); err != nil {
			return err
		}
		frames = frames[n:]
	}
	return nil
}

// flush writes the first n iovecs, expected to cover total bytes.
func (w *Writer) flush(n, total int) error {
	// Drop the references to the callers' frames once written, so that
	// the Writer does not keep them from the garbage collector.
	defer func() {
		for i := 1; i < n; i += 2 {
			w.iov[i].Base = nil
		}
	}()
	r, e := sys.WritevFile(w.fd, w.iov[:n])
	if e != 0 {
		return fmt.Errorf("pcap: writev: %w", e)
	}
	if r != total {
		return fmt.Errorf("pcap: short write, %d of %d bytes", r, total)
	}
	return nil
}

// Close closes the capture file.
func (w *Writer) Close() error { return w.f.Close() }
