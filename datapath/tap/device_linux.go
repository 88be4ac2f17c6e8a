package tap

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"gopasst/batch"
)

// CreateDevice creates (or attaches to) the tap interface name in the
// network namespace of the calling thread, with IFF_TAP|IFF_NO_PI: every
// read and write is one bare Ethernet frame. The caller must be running on
// a thread that has entered the target namespace; the returned descriptor
// keeps working from any thread afterwards. It is non-blocking and
// close-on-exec.
func CreateDevice(name string) (fd int, ifname string, err error) {
	fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, "", fmt.Errorf("tap name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, "", fmt.Errorf("TUNSETIFF %q: %w", name, err)
	}
	return fd, ifr.Name(), nil
}

// Pcap records frames crossing the guest interface (datapath/pcap).
type Pcap interface {
	Write(frame []byte) error
}

// Device is pasta's guest back end: a tap descriptor. Frames towards the
// guest are queued in a preallocated pool and written one write(2) each at
// Flush (a tap takes one frame per call); frames from the guest are read
// until EAGAIN into the caller's buffers.
type Device struct {
	fd    int
	out   *batch.Frames
	pcap  Pcap
	Stats Stats
}

// Stats counts what crossed the device.
type Stats struct {
	FramesOut, BytesOut, DroppedOut uint64
	FramesIn, BytesIn               uint64
}

// MaxFrame is the largest frame either back end carries: 65535 bytes of IP
// packet plus the Ethernet header.
const MaxFrame = 65535 + 14

// NewDevice wraps tap descriptor fd with an outgoing queue of queueLen
// frames.
func NewDevice(fd int, queueLen int, p Pcap) *Device {
	return &Device{fd: fd, out: batch.NewFrames(queueLen, MaxFrame, 0), pcap: p}
}

// FD returns the tap descriptor, for the event loop.
func (d *Device) FD() int { return d.fd }

// Frame implements Out. When the queue is full it is flushed first.
func (d *Device) Frame() []byte {
	if d.out.Full() {
		d.Flush()
	}
	return d.out.Next()
}

// Reserve implements Out.
func (d *Device) Reserve(bufs [][]byte) int {
	if d.out.Cap()-d.out.Len() < len(bufs) {
		d.Flush()
	}
	n := min(len(bufs), d.out.Cap()-d.out.Len())
	for i := 0; i < n; i++ {
		bufs[i] = d.out.Slot(d.out.Len() + i)
	}
	return n
}

// Commit implements Out.
func (d *Device) Commit(n int) { d.out.Commit(n) }

// Queued returns how many frames wait for Flush.
func (d *Device) Queued() int { return d.out.Len() }

// Flush implements Out: it writes every queued frame. A frame the kernel
// refuses (the tap's queue is full: EAGAIN/ENOBUFS) is dropped and counted;
// TCP recovers it by retransmission, as with a lossy link.
func (d *Device) Flush() {
	n := d.out.Len()
	for i := 0; i < n; i++ {
		f := d.out.Frame(i)
		if d.pcap != nil {
			d.pcap.Write(f)
		}
		for {
			_, _, e := unix.Syscall(unix.SYS_WRITE, uintptr(d.fd), uintptr(unsafe.Pointer(&f[0])), uintptr(len(f)))
			if e == unix.EINTR {
				continue
			}
			if e != 0 {
				d.Stats.DroppedOut++
			} else {
				d.Stats.FramesOut++
				d.Stats.BytesOut += uint64(len(f))
			}
			break
		}
	}
	d.out.Reset()
}

// Read reads frames from the guest into bufs until the device has no more
// or bufs are full, storing lengths in sizes. It returns how many frames were
// read; err is nil on EAGAIN after at least zero frames.
func (d *Device) Read(bufs [][]byte, sizes []int) (int, error) {
	for i := 0; i < len(bufs); {
		b := bufs[i]
		r, _, e := unix.Syscall(unix.SYS_READ, uintptr(d.fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN:
			return i, nil
		case e != 0:
			return i, fmt.Errorf("tap read: %w", e)
		case r == 0:
			return i, errors.New("tap read: end of file")
		}
		sizes[i] = int(r)
		d.Stats.FramesIn++
		d.Stats.BytesIn += uint64(r)
		if d.pcap != nil {
			d.pcap.Write(b[:r])
		}
		i++
	}
	return len(bufs), nil
}
