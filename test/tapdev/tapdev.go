// Package tapdev holds what the test peers (test/streampeer,
// test/vhostpeer) share: the guest's "card", a tap device created inside
// the guest's network namespace, whose kernel stack then plays the guest,
// and the connection to the back end's socket (DialRetry). Only programs
// under test/ import it.
package tapdev

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// VnetHdrLen is the virtio-net header a tap with Options.VnetHdr puts in
// front of every frame, both ways: struct virtio_net_hdr_v1 (flags,
// gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers), the
// layout a VERSION_1 virtio-net device uses, so that a frame can move
// between a tap and a virtqueue buffer with its header unchanged. The tap
// reads and writes the first 10 bytes; num_buffers is left to the caller.
const VnetHdrLen = 12

// Options say how to make the device.
type Options struct {
	// MAC, if not nil, is the device's Ethernet address (default: the
	// kernel's random one).
	MAC net.HardwareAddr
	// MTU is the device's MTU.
	MTU int
	// VnetHdr adds IFF_VNET_HDR with a VnetHdrLen-byte header; without
	// it frames are bare (IFF_NO_PI only).
	VnetHdr bool
	// Offload, with VnetHdr, is TUNSETOFFLOAD's argument (TUN_F_CSUM,
	// TUN_F_TSO4, ...): what the kernel may hand us in frames we read
	// (partial checksums, segments up to 64 KiB). 0 leaves every frame
	// checksummed and at most MTU long. Frames we write may carry any
	// offload whatever this says.
	Offload int
}

// Create creates the tap device name (IFF_TAP|IFF_NO_PI, plus
// IFF_VNET_HDR if o says so) in the network namespace at nsPath, sets its
// MAC address and MTU, a long transmit queue, and brings it up. It returns
// the device's descriptor, non-blocking and registered with the runtime's
// poller, or an error naming the step that failed.
//
// A tap device lives in the network namespace of the thread that creates
// it (TUNSETIFF), and netlink sockets in the one of the thread that opens
// them, so all of it runs on a thread of its own that enters the
// namespace first. That thread is never given back to the scheduler: its
// goroutine ends locked, and the runtime ends the thread with it, so no
// other goroutine ever runs in the guest's namespace by accident.
func Create(nsPath, name string, o Options) (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: this thread is in another namespace now.
		f, err := createHere(nsPath, name, o)
		done <- result{f, err}
	}()
	r := <-done
	return r.f, r.err
}

// createHere is Create on the calling thread, which it moves into the
// namespace at nsPath for good.
func createHere(nsPath, name string, o Options) (*os.File, error) {
	ns, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("-netns %s: %w", nsPath, err)
	}
	err = unix.Setns(ns, unix.CLONE_NEWNET)
	unix.Close(ns)
	if err != nil {
		return nil, fmt.Errorf("-netns %s: setns: %w", nsPath, err)
	}

	// Non-blocking from the start: os.NewFile then registers the
	// descriptor with the poller.
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("-tap %q: %w", name, err)
	}
	flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if o.VnetHdr {
		flags |= unix.IFF_VNET_HDR
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("create tap %s in %s (TUNSETIFF): %w", name, nsPath, err)
	}
	if o.VnetHdr {
		// The default header is the legacy 10 bytes; 12 makes room for
		// num_buffers, as in a VERSION_1 device's buffers.
		if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, VnetHdrLen); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("tap %s: TUNSETVNETHDRSZ %d: %w", name, VnetHdrLen, err)
		}
		if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, o.Offload); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("tap %s: TUNSETOFFLOAD %#x: %w", name, o.Offload, err)
		}
	}
	f := os.NewFile(uintptr(fd), "/dev/net/tun:"+name)

	fail := func(step string, err error) (*os.File, error) {
		f.Close() // the device goes with its only descriptor
		return nil, fmt.Errorf("tap %s: %s: %w", name, step, err)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fail("find it", err)
	}
	if o.MAC != nil {
		if err := netlink.LinkSetHardwareAddr(link, o.MAC); err != nil {
			return fail("set MAC address "+o.MAC.String(), err)
		}
	}
	if err := netlink.LinkSetMTU(link, o.MTU); err != nil {
		return fail(fmt.Sprintf("set MTU %d", o.MTU), err)
	}
	// qemu's virtio-net queue drops nothing: when it is full the guest
	// stops sending. A tap drops what overflows its transmit queue
	// instead, 1000 frames by default: a burst at MTU 1500 while passt's
	// socket is full is lost, and the guest's TCP recovers slowly. A
	// long queue (as pasta gives its tap) keeps the peer close to qemu.
	if err := netlink.LinkSetTxQLen(link, 10000); err != nil {
		return fail("set txqueuelen", err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fail("bring it up", err)
	}
	return f, nil
}

// SetOffload sets the offloads (TUNSETOFFLOAD's TUN_F_* flags) of tap, a
// device made with Options.VnetHdr: what the kernel may hand us in frames
// read from it from now on.
func SetOffload(tap *os.File, flags int) error {
	rc, err := tap.SyscallConn()
	if err != nil {
		return fmt.Errorf("tap: %w", err)
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) { ierr = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, flags) }); err != nil {
		return fmt.Errorf("tap: %w", err)
	}
	if ierr != nil {
		return fmt.Errorf("tap: TUNSETOFFLOAD %#x: %w", flags, ierr)
	}
	return nil
}

// dialRetryEvery is the pause between two attempts to connect: the back
// end may not have bound its socket yet.
const dialRetryEvery = 20 * time.Millisecond

// DialRetry connects to the UNIX stream socket at path, retrying every
// dialRetryEvery while it does not exist or refuses, for up to wait. It
// returns the connection, or the last error.
func DialRetry(path string, wait time.Duration) (*net.UnixConn, error) {
	deadline := time.Now().Add(wait)
	addr := &net.UnixAddr{Name: path, Net: "unix"}
	for {
		c, err := net.DialUnix("unix", nil, addr)
		if err == nil {
			return c, nil
		}
		retry := errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EAGAIN)
		if !retry || time.Now().After(deadline) {
			return nil, fmt.Errorf("connect to %s: %w", path, err)
		}
		time.Sleep(dialRetryEvery)
	}
}
