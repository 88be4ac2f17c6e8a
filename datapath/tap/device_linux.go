// pasta's guest back end: the tap device in the namespace, opened with a
// virtio-net header and offloads where the kernel allows, read and written
// one frame per system call.

package tap

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"gopasst/batch"
	"gopasst/datapath/logging"
	"gopasst/datapath/sys"
)

// OffloadEnv names the environment variable that selects the tap's
// offloads, for benchmarking and as an escape hatch: "off" (or "0") opens
// the tap without a virtio-net header, "csum" asks for checksum offload
// only, anything else (the default) for checksum and TCP segmentation
// offload.
const OffloadEnv = "GOPASST_TAP_OFFLOAD"

// CreateDevice creates (or attaches to) the tap interface name in the
// network namespace of the calling thread, with IFF_TAP|IFF_NO_PI and,
// unless OffloadEnv says "off", IFF_VNET_HDR: every read and write is one
// Ethernet frame, after a virtio-net header if that flag is on. With the
// header it asks for checksum and TCP segmentation offload
// (TUNSETOFFLOAD with TUN_F_CSUM|TUN_F_TSO4|TUN_F_TSO6), so that the
// namespace's kernel hands us TCP segments of up to 64 KiB whatever its MTU,
// with checksums left partial; if the kernel refuses, checksum offload alone
// and then none are tried, and the header stays (NewDevice copes with
// either). The caller must be running on a thread that has entered the
// target namespace; the returned descriptor keeps working from any thread
// afterwards. It is non-blocking and close-on-exec.
//
// name: the interface name (empty: the kernel picks one). Returns the
// descriptor and the interface's name, or an error; the offloads in effect
// are logged (debug).
func CreateDevice(name string) (fd int, ifname string, err error) {
	return CreateDeviceWith(name, nil)
}

// Opener opens /dev/net/tun for CreateDeviceWith, on the calling thread's
// behalf (the device's network namespace is its opener's): for a process
// that may not open the device itself, and can ask one that may.
type Opener func() (int, error)

// CreateDeviceWith is CreateDevice with open called to get the
// /dev/net/tun descriptor when opening it ourselves is refused (EACCES,
// EPERM: the device's mode). open nil: no second chance.
func CreateDeviceWith(name string, open Opener) (fd int, ifname string, err error) {
	mode := os.Getenv(OffloadEnv)
	vnet := mode != "off" && mode != "0" && mode != "none"
	fd, ifname, err = openTap(name, vnet, open)
	if err != nil && vnet && !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EPERM) {
		// A kernel without IFF_VNET_HDR (none since 2.6.27) or a
		// refusing LSM: the plain tap still works.
		vnet = false
		fd, ifname, err = openTap(name, false, open)
	}
	if err != nil || !vnet {
		logging.Debugf("tap %s: no virtio-net header, no offloads", ifname)
		return fd, ifname, err
	}
	tries := []int{unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6, unix.TUN_F_CSUM}
	if mode == "csum" {
		tries = tries[1:]
	}
	for _, o := range tries {
		if e := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, o); e == nil {
			logging.Debugf("tap %s: virtio-net header, offloads %#x (TUN_F_*)", ifname, o)
			return fd, ifname, nil
		}
	}
	logging.Debugf("tap %s: virtio-net header, TUNSETOFFLOAD refused", ifname)
	return fd, ifname, nil
}

// openTap opens /dev/net/tun (through open if we may not) and attaches it
// to tap name.
//
// name: the interface name; vnet: whether to ask for IFF_VNET_HDR; open:
// see CreateDeviceWith. Returns the descriptor and the interface's name, or
// an error.
func openTap(name string, vnet bool, open Opener) (int, string, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if (err == unix.EACCES || err == unix.EPERM) && open != nil {
		var oerr error
		if fd, oerr = open(); oerr == nil {
			err = nil
		} else {
			logging.Debugf("open /dev/net/tun: %v; asking for it: %v", err, oerr)
		}
	}
	if err != nil {
		return -1, "", fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, "", fmt.Errorf("tap name %q: %w", name, err)
	}
	flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if vnet {
		flags |= unix.IFF_VNET_HDR
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, "", fmt.Errorf("TUNSETIFF %q: %w", name, err)
	}
	return fd, ifr.Name(), nil
}

// DeviceName returns the interface name of tap descriptor fd (pasta's
// -F: a tap opened by whoever started us), or an error if fd is not a
// tap device (a tun device, a socket, a closed descriptor).
func DeviceName(fd int) (string, error) {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return "", err
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		return "", fmt.Errorf("descriptor %d is no tap device (TUNGETIFF: %w)", fd, err)
	}
	if ifr.Uint16()&unix.IFF_TAP == 0 {
		return "", fmt.Errorf("descriptor %d is a tun device, not a tap", fd)
	}
	return ifr.Name(), nil
}

// vnetHdrLen returns the virtio-net header length of tap descriptor fd: 0
// if IFF_VNET_HDR is off or fd is no tap (a test's socket).
func vnetHdrLen(fd int) int {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return 0
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil || ifr.Uint16()&unix.IFF_VNET_HDR == 0 {
		return 0
	}
	n, err := unix.IoctlGetInt(fd, unix.TUNGETVNETHDRSZ)
	if err != nil || n < VnetHdrLen {
		return VnetHdrLen
	}
	return n
}

// Pcap records frames crossing the guest interface (datapath/pcap).
type Pcap interface {
	Write(frame []byte) error
}

// Device is pasta's guest back end: a tap descriptor. Frames towards the
// guest are queued in a preallocated pool and written one write(2) each at
// Flush (a tap takes one frame per call), after their virtio-net header if
// the tap has one (in the pool's headroom, so the frame never moves);
// frames from the guest are read, one read(2) or readv(2) each, into the
// device's receive pool, their virtio-net headers into a scratch header.
type Device struct {
	fd    int
	vnet  int  // virtio-net header length, 0 without IFF_VNET_HDR
	noGSO bool // OffloadEnv "csum": no segmentation offload towards the guest either
	out   *batch.Frames
	pcap  Pcap
	rx    [][]byte // receive pool: RxBatch buffers of MaxFrame bytes, made at the first Read
	hdr   [16]byte // virtio-net header of the frame being read
	iov   [2]unix.Iovec
	Stats Stats
}

// Stats counts what crossed the device.
type Stats struct {
	FramesOut, BytesOut, DroppedOut uint64
	FramesIn, BytesIn               uint64
	GSOIn, GSOOut, BadVnetIn        uint64 // segmentation offload frames; malformed headers
}

// RxBatch is the size of the receive pool: the most frames one Read
// returns.
const RxBatch = 128

var _ Backend = (*Device)(nil)

// NewDevice wraps tap descriptor fd with an outgoing queue of queueLen
// frames. Whether the tap has a virtio-net header is asked of the tap
// itself (TUNGETIFF).
//
// fd: the tap; queueLen: frames queued before a flush; p: capture, or nil.
func NewDevice(fd int, queueLen int, p Pcap) *Device {
	vnet := vnetHdrLen(fd)
	return &Device{fd: fd, vnet: vnet, noGSO: os.Getenv(OffloadEnv) == "csum",
		out: batch.NewFrames(queueLen, MaxFrame, vnet), pcap: p}
}

// VnetHdrLen returns the length of the virtio-net header in front of every
// frame on the tap, 0 if it has none.
func (d *Device) VnetHdrLen() int { return d.vnet }

// Offloads implements Out: with a virtio-net header, partial checksums
// and, unless OffloadEnv says "csum", TCP and UDP segmentation. None while
// capturing: the capture would show partial checksums and super-frames
// that never crossed a real link.
func (d *Device) Offloads() Offloads {
	if d.vnet == 0 || d.pcap != nil {
		return Offloads{}
	}
	return Offloads{Csum: true, TSO: !d.noGSO, USO: !d.noGSO}
}

// CommitOffload implements Out: the header goes into the slot's headroom.
func (d *Device) CommitOffload(n int, h *VnetHdr) {
	if d.vnet > 0 {
		hr := d.out.Headroom(d.out.Len())
		clear(hr)
		h.Encode(hr)
		if h.GSOType != GSONone {
			d.Stats.GSOOut++
		}
	}
	d.out.Commit(n)
}

// FD returns the tap descriptor.
func (d *Device) FD() int { return d.fd }

// Watch implements Backend: the tap descriptor, for input and hang-up.
func (d *Device) Watch(w Watcher) error {
	return w.Watch(d.fd, unix.EPOLLIN|unix.EPOLLRDHUP, 0)
}

// Ready implements Backend: input means frames; a hang-up or error
// without input means the tap is gone (its namespace was destroyed).
func (d *Device) Ready(idx uint32, events uint32) (Event, error) {
	if events&unix.EPOLLIN != 0 {
		return EventFrames, nil
	}
	if events&(unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		return 0, errors.New("guest interface closed")
	}
	return 0, nil
}

// Close implements Backend.
func (d *Device) Close() error { return unix.Close(d.fd) }

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

// Commit implements Out. With a virtio-net header the frame gets an empty
// one: complete checksums, no segmentation.
func (d *Device) Commit(n int) {
	if d.vnet > 0 {
		clear(d.out.Headroom(d.out.Len()))
	}
	d.out.Commit(n)
}

// Queued returns how many frames wait for Flush.
func (d *Device) Queued() int { return d.out.Len() }

// Flush implements Out: it writes every queued frame, one write(2) each
// (sys.Write). A frame the kernel refuses (the tap's queue is full:
// EAGAIN/ENOBUFS) is dropped and counted.
func (d *Device) Flush() {
	n := d.out.Len()
	for i := 0; i < n; i++ {
		if d.pcap != nil {
			d.pcap.Write(d.out.Frame(i))
		}
		f := d.out.WithHeadroom(i)
		if _, e := sys.Write(d.fd, f); e != 0 {
			d.Stats.DroppedOut++
			continue
		}
		d.Stats.FramesOut++
		d.Stats.BytesOut += uint64(len(f))
	}
	d.out.Reset()
}

// Read implements Backend: it reads frames from the tap into the receive
// pool until the tap has no more or len(frames) (at most RxBatch) are
// read. Each view is a bare Ethernet frame; a virtio-net header, if the
// tap has them, is checked and dropped (a malformed one is counted: the
// frame itself is still whole, its headers are validated on their own,
// only the offload hints are lost). A TCP frame may be a segmentation
// offload super-frame (up to MaxFrame bytes, its IP length covering all of
// it) with a partial checksum: its payload goes to a socket and no
// checksum is checked, so it needs nothing special.
func (d *Device) Read(frames [][]byte) (int, error) {
	if d.rx == nil {
		// Once, at the first read: a device used only to write (tests)
		// never pays for the pool.
		mem := make([]byte, RxBatch*MaxFrame)
		d.rx = make([][]byte, RxBatch)
		for i := range d.rx {
			d.rx[i] = mem[i*MaxFrame : (i+1)*MaxFrame : (i+1)*MaxFrame]
		}
	}
	want := min(len(frames), RxBatch)
	for i := 0; i < want; {
		b := d.rx[i]
		var r int
		var e unix.Errno
		if d.vnet > 0 {
			d.iov[0].Base = &d.hdr[0]
			d.iov[0].SetLen(d.vnet)
			d.iov[1].Base = &b[0]
			d.iov[1].SetLen(len(b))
			r, e = sys.Readv(d.fd, d.iov[:])
		} else {
			r, e = sys.Read(d.fd, b)
		}
		switch {
		case e == unix.EAGAIN:
			return i, nil
		case e != 0:
			return i, fmt.Errorf("tap read: %w", e)
		case r == 0:
			return i, errors.New("tap read: end of file")
		}
		n := r
		if d.vnet > 0 {
			if n < d.vnet {
				d.Stats.BadVnetIn++
				continue
			}
			n -= d.vnet
			h, err := DecodeVnetHdr(d.hdr[:d.vnet], n)
			if err != nil {
				d.Stats.BadVnetIn++
			} else if h.GSOType != GSONone {
				d.Stats.GSOIn++
			}
		}
		frames[i] = b[:n]
		d.Stats.FramesIn++
		d.Stats.BytesIn += uint64(n)
		if d.pcap != nil {
			d.pcap.Write(b[:n])
		}
		i++
	}
	return want, nil
}
