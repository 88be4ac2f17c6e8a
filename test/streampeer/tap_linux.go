// tap_linux.go: the guest's "card", a tap device created inside the
// guest's network namespace.

package main

import (
	"fmt"
	"net"
	"os"
	"runtime"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// createTap creates the tap device name (IFF_TAP|IFF_NO_PI: bare Ethernet
// frames, no packet information, no virtio-net header) in the network
// namespace at nsPath, sets its MAC address (if mac is not nil) and its
// MTU, and brings it up. It returns the device's descriptor, non-blocking
// and registered with the runtime's poller, or an error naming the step
// that failed.
//
// A tap device lives in the network namespace of the thread that creates
// it (TUNSETIFF), and netlink sockets in the one of the thread that opens
// them, so all of it runs on a thread of its own that enters the
// namespace first. That thread is never given back to the scheduler: its
// goroutine ends locked, and the runtime ends the thread with it, so no
// other goroutine ever runs in the guest's namespace by accident.
func createTap(nsPath, name string, mac net.HardwareAddr, mtu int) (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: this thread is in another namespace now.
		f, err := createTapHere(nsPath, name, mac, mtu)
		done <- result{f, err}
	}()
	r := <-done
	return r.f, r.err
}

// createTapHere is createTap on the calling thread, which it moves into
// the namespace at nsPath for good.
func createTapHere(nsPath, name string, mac net.HardwareAddr, mtu int) (*os.File, error) {
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
	// descriptor with the poller, and both directions wait there.
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("-tap %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("create tap %s in %s (TUNSETIFF): %w", name, nsPath, err)
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
	if mac != nil {
		if err := netlink.LinkSetHardwareAddr(link, mac); err != nil {
			return fail("set MAC address "+mac.String(), err)
		}
	}
	if err := netlink.LinkSetMTU(link, mtu); err != nil {
		return fail(fmt.Sprintf("set MTU %d", mtu), err)
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
