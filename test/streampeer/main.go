// Command streampeer plays qemu on passt's stream socket at kernel speed: a
// tap device in a network namespace stands for the guest's card, and its
// frames go to and come from passt's UNIX domain socket in qemu's framing
// (every frame a 4-byte big-endian length followed by the Ethernet frame,
// both ways). The guest is the namespace's own kernel. The integration
// tests (test/passt_peer_test.go) and the benchmark harness (bench/) build
// and run it; nothing imports it.
//
// # Usage
//
// The command line is a contract: the benchmark harness runs it as written
// here.
//
//	streampeer -socket PATH -netns NAME [-tap NAME] [-mtu N] [-mac MAC] [-wait DURATION]
//	streampeer -fd N -netns NAME [-tap NAME] [-mtu N] [-mac MAC]
//	streampeer relay -a PATH_A -b PATH_B
//
// Peer mode (the first two forms) creates the tap device -tap (default
// eth0; IFF_TAP|IFF_NO_PI, no virtio-net header) inside the network
// namespace -netns (a name under /run/netns, or a path such as
// /proc/PID/ns/net), sets its MAC address if -mac is given and its MTU
// (-mtu, default 65520, passt's default), and brings it up. It then
// connects to passt's socket PATH, retrying while the socket does not
// exist yet or refuses, for up to -wait (default 10s); with -fd it uses the
// connected stream socket it inherited as descriptor N instead (qemu 10's
// -netdev passt hands passt the other end of such a pair). Once connected
// it prints exactly one line, "ready", on standard output, and bridges
// frames both ways until either side ends: end of file or a reset from
// passt, or the tap device going away. Then it exits with status 0. On an
// error (a bad option, a namespace or device that cannot be set up, a
// socket that never accepts, a frame length from passt outside [14, 65549])
// it prints one line on standard error and exits with status 1.
//
// Relay mode is the "trivial loop" of the ceiling measurement: it listens
// on the UNIX sockets PATH_A and PATH_B (removing stale socket files
// there), prints "ready" once both listen, accepts one client on each, and
// copies the byte streams between them both ways, unchanged, until one
// side ends; then it exits with status 0. Both clients speak the same
// framing, so a verbatim copy carries every frame whole: two peers (-socket
// PATH_A and -socket PATH_B, in two namespaces) joined by it make a link
// whose speed is the ceiling of the stream path, with nothing translated.
//
// # Theory of operation
//
// Each direction has a goroutine of its own and one preallocated buffer;
// nothing is allocated per frame. Both descriptors are non-blocking and
// waited on through the runtime's poller (syscall.RawConn), so an idle
// direction sleeps in epoll, never spins.
//
// Tap to socket (fromTap): one wait for readability, then read(2) frame
// after frame from the tap into one buffer, each placed 4 bytes after the
// previous frame's end, its length written in front of it, until the tap
// has nothing more (EAGAIN), the batch is full (tapBatch frames) or the
// buffer has no room for a largest frame; then the packed region, already
// in stream framing, goes out with as few write(2) calls as the socket
// takes. A lone frame is written at once: batching never waits for more.
//
// Socket to tap (toTap): read(2) the socket into a large buffer (as much
// as passt has queued, up to sockBuf bytes per call), write each whole
// frame found there to the tap with one write(2) each (a tap takes one
// frame per call), and move the partial frame at the end, if any, to the
// front before the next read. A frame the tap refuses (the kernel drops
// it) is counted and skipped, as a card drops what its host cannot take.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"gopasst/test/tapdev"
)

// Frame bounds on the stream, as passt's: at least an Ethernet header, at
// most a 65535-byte payload behind one (the largest MTU a tap takes).
const (
	minFrame = 14
	maxFrame = 65535 + 14
	// hdrLen is the length prefix of every frame on the stream.
	hdrLen = 4
)

// main parses the command line, runs the selected mode and exits with its
// status.
func main() {
	if len(os.Args) > 1 && os.Args[1] == "relay" {
		os.Exit(report(relayMain(os.Args[2:], os.Stdout)))
	}
	os.Exit(report(peerMain(os.Args[1:])))
}

// report turns a mode's result into the exit status: 0 for nil, else 1
// after printing the error as one line on standard error.
func report(err error) int {
	if err == nil {
		return 0
	}
	msg := strings.ReplaceAll(err.Error(), "\n", "; ")
	fmt.Fprintln(os.Stderr, "streampeer: "+msg)
	return 1
}

// peerOpts are peer mode's options.
type peerOpts struct {
	socket string
	fd     int
	netns  string
	tap    string
	mtu    int
	mac    net.HardwareAddr
	wait   time.Duration
}

// parsePeer parses peer mode's arguments, returning the options or an
// error naming the bad one.
func parsePeer(args []string) (peerOpts, error) {
	var o peerOpts
	fs := flag.NewFlagSet("streampeer", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.socket, "socket", "", "passt's UNIX domain socket to connect to")
	fs.IntVar(&o.fd, "fd", -1, "an inherited connected stream socket to use instead of -socket")
	fs.StringVar(&o.netns, "netns", "", "network namespace of the tap: a name under /run/netns or a path")
	fs.StringVar(&o.tap, "tap", "eth0", "name of the tap device to create")
	fs.IntVar(&o.mtu, "mtu", 65520, "MTU of the tap device")
	mac := fs.String("mac", "", "MAC address of the tap device (default: the kernel's random one)")
	fs.DurationVar(&o.wait, "wait", 10*time.Second, "how long to retry connecting to -socket")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case (o.socket == "") == (o.fd < 0):
		return o, errors.New("give exactly one of -socket PATH and -fd N")
	case o.netns == "":
		return o, errors.New("-netns NAME is required")
	case o.tap == "" || len(o.tap) >= syscall.IFNAMSIZ:
		return o, fmt.Errorf("-tap %q: want 1 to %d characters", o.tap, syscall.IFNAMSIZ-1)
	case o.mtu < 68 || o.mtu > maxFrame-minFrame:
		return o, fmt.Errorf("-mtu %d: want 68 to %d", o.mtu, maxFrame-minFrame)
	case o.wait <= 0:
		return o, fmt.Errorf("-wait %v: want a positive duration", o.wait)
	}
	if *mac != "" {
		hw, err := net.ParseMAC(*mac)
		if err != nil || len(hw) != 6 {
			return o, fmt.Errorf("-mac %q: want an Ethernet address like 02:00:00:00:00:01", *mac)
		}
		o.mac = hw
	}
	if !strings.Contains(o.netns, "/") {
		o.netns = "/run/netns/" + o.netns
	}
	return o, nil
}

// peerMain is peer mode: the tap, the connection, "ready", then the bridge
// until either side ends. It returns nil at a clean end, else the error.
func peerMain(args []string) error {
	o, err := parsePeer(args)
	if err != nil {
		return err
	}
	tap, err := tapdev.Create(o.netns, o.tap, tapdev.Options{MAC: o.mac, MTU: o.mtu})
	if err != nil {
		return err
	}
	defer tap.Close()
	var conn *net.UnixConn
	if o.fd >= 0 {
		conn, err = inheritedConn(o.fd)
	} else {
		conn, err = tapdev.DialRetry(o.socket, o.wait)
	}
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := fmt.Println("ready"); err != nil {
		return fmt.Errorf("stdout: %w", err)
	}
	return bridge(tap, conn)
}

// inheritedConn returns the connected stream socket inherited as
// descriptor fd, or an error if it is not one.
func inheritedConn(fd int) (*net.UnixConn, error) {
	typ, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("-fd %d: not a socket: %w", fd, err)
	}
	if typ != syscall.SOCK_STREAM {
		return nil, fmt.Errorf("-fd %d: socket type %d, want a stream socket", fd, typ)
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("fd %d", fd))
	c, err := net.FileConn(f) // a duplicate: the original can go
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("-fd %d: %w", fd, err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("-fd %d: a %T, want a UNIX domain socket", fd, c)
	}
	return uc, nil
}
