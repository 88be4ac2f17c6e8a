// Command vhostpeer plays qemu and the guest's virtio-net driver on a
// vhost-user back end (`passt --vhost-user -s PATH`) at kernel speed: it
// makes the guest's memory (a memfd), hands it to the back end with the
// start-up sequence qemu 7.2 sends, lays out the two split virtqueues in
// it, and bridges the frames of those rings to a tap device in a network
// namespace, whose kernel stack is the guest. The integration tests
// (test/vhost_peer_test.go) and the benchmark harness (bench/) build and
// run it; nothing imports it. test/streampeer is its sibling for the
// stream socket.
//
// # Usage
//
// The command line is a contract: the benchmark harness runs it as written
// here.
//
//	vhostpeer -socket PATH -netns NAME [-tap NAME] [-mtu N] [-mac MAC] [-wait DURATION]
//	          [-queue N] [-rx-buf BYTES] [-no-mrg] [-no-offload] [-no-event-idx] [-cycles N] [-v]
//	vhostpeer -socket PATH -hostile KIND [-wait DURATION] [-v]
//
// Peer mode (the first form) creates the tap device -tap (default eth0;
// IFF_TAP|IFF_NO_PI|IFF_VNET_HDR with a 12-byte virtio-net header) inside
// the network namespace -netns (a name under /run/netns, or a path such as
// /proc/PID/ns/net), sets its MAC address if -mac is given and its MTU
// (-mtu, default 65520, passt's default), and brings it up. It then
// connects to the back end's socket PATH, retrying while the socket does
// not exist yet or refuses, for up to -wait (default 10s), runs the
// handshake (after -cycles start/stop cycles of the device, default 0, as
// firmware and a guest kernel each start it), prints exactly one line,
// "ready", on standard output, and bridges frames both ways until the back
// end closes the connection, the tap device goes away, or SIGTERM/SIGINT
// (then it stops the rings with GET_VRING_BASE, as qemu does at shutdown,
// and closes). Then it exits with status 0. On an error (a bad option, a
// namespace or device that cannot be set up, a socket that never accepts,
// a back end that answers out of protocol or breaks the ring contract) it
// prints one line on standard error, "vhostpeer: ...", and exits with
// status 1; a line that starts "vhostpeer: back end" names a fault of the
// back end's.
//
// Hostile mode (-hostile KIND) makes no tap: it connects, runs the
// handshake with or without one deliberate violation, puts malformed
// chains in the rings, kicks, and waits up to -wait for the back end to
// react (a used entry, or the connection closed); it prints one line,
// "hostile KIND: <what the back end did>", and exits 0 whatever the back
// end did, 1 only if it could not run. -hostile list prints the kinds.
//
// # Features
//
// The peer acks what the back end offers of: VERSION_1 (required),
// PROTOCOL_FEATURES, MRG_RXBUF (-no-mrg: not), EVENT_IDX (-no-event-idx:
// not), and the offloads (-no-offload: none): CSUM with HOST_TSO4/6 and
// HOST_ECN (the tap may then hand us partially checksummed frames and
// segments up to 64 KiB, TUNSETOFFLOAD), GUEST_CSUM with GUEST_TSO4/6 and
// GUEST_ECN (the back end may send such frames; the tap takes them as they
// are). Of the protocol features it acks MQ, LOG_SHMFD, RARP and REPLY_ACK
// (as qemu 7.2 acks what it knows; with REPLY_ACK, SET_MEM_TABLE asks for
// the reply). A frame from the back end with DATA_VALID (checksum not
// computed, trust it) on TCP or UDP goes to the tap as a partial checksum
// (NEEDS_CSUM), which the namespace's stack delivers locally without
// verifying, as a Linux guest trusts DATA_VALID: tun ignores DATA_VALID
// itself. Frames without either flag are verified by the namespace's
// kernel, so a wrong checksum from the back end shows as loss.
//
// # Theory of operation
//
// Guest memory is one memfd mapped shared, shown to the back end as two
// regions with different file offsets (the rings and the TX buffers at
// guest physical address 0x4000_0000, the RX buffers at 0x1_0000_0000), so
// that guest physical addresses differ from the peer's own virtual ones
// (the ring addresses of SET_VRING_ADDR) and lookups across regions are
// exercised. Every descriptor has a fixed buffer of its own; the
// descriptor table is written once.
//
// RX (queue 0, back end to tap) has every buffer posted from the start
// and each reposted as soon as its frame went to the tap: the back end
// never starves. One goroutine waits on the RX call eventfd; woken, it
// takes every used entry there is (a frame is num_buffers entries with
// MRG_RXBUF, else one), checks it (id posted by us and not returned
// twice, length within the buffer), writes the frame to the tap with one
// writev(2) straight from guest memory (header included: the tap's vnet
// header is the virtio-net header), reposts the buffers, publishes the
// avail index once per batch and kicks only if the back end asks
// (EVENT_IDX's avail_event, or NO_NOTIFY clear). Interrupts are off while
// it works and armed again (used_event, or NO_INTERRUPT cleared) only
// before it sleeps, with a full barrier and a second look at the used
// index, as a NAPI driver does.
//
// TX (queue 1, tap to back end) is another goroutine: it reads frames from
// the tap straight into free TX buffers (header included), one readable
// descriptor each, and publishes them as one batch (at most txBatch) with
// one kick unless suppressed. Completed buffers are taken back from the
// used ring before each batch; interrupts of the TX queue stay off unless
// every buffer is in flight, as Linux frees transmitted buffers lazily.
//
// Nothing is allocated per frame: buffers, iovecs and callbacks are made
// once. The peer assumes a little-endian host (amd64), like the rings.
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
)

// main parses the command line, runs the selected mode and exits with its
// status.
func main() {
	os.Exit(report(run(os.Args[1:], os.Stdout)))
}

// report turns a mode's result into the exit status: 0 for nil, else 1
// after printing the error as one line on standard error.
func report(err error) int {
	if err == nil {
		return 0
	}
	msg := strings.ReplaceAll(err.Error(), "\n", "; ")
	fmt.Fprintln(os.Stderr, "vhostpeer: "+msg)
	return 1
}

// opts are the command line's options.
type opts struct {
	socket     string
	netns      string
	tap        string
	mtu        int
	mac        net.HardwareAddr
	wait       time.Duration
	queue      int
	rxBuf      int
	noMrg      bool
	noOffload  bool
	noEventIdx bool
	cycles     int
	hostile    string
	verbose    bool
}

// Bounds of the options.
const (
	maxQueue  = 32768 // the largest split ring (virtio 1.x)
	minRxBuf  = 256   // room for a header and the first headers of a frame
	maxCycles = 100
)

// parse parses the arguments, returning the options or an error naming
// the bad one.
func parse(args []string) (opts, error) {
	var o opts
	fs := flag.NewFlagSet("vhostpeer", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.socket, "socket", "", "the back end's vhost-user UNIX domain socket")
	fs.StringVar(&o.netns, "netns", "", "network namespace of the tap: a name under /run/netns or a path")
	fs.StringVar(&o.tap, "tap", "eth0", "name of the tap device to create")
	fs.IntVar(&o.mtu, "mtu", 65520, "MTU of the tap device")
	mac := fs.String("mac", "", "MAC address of the tap device (default: the kernel's random one)")
	fs.DurationVar(&o.wait, "wait", 10*time.Second, "how long to retry connecting (hostile mode: to wait for the back end's reaction)")
	fs.IntVar(&o.queue, "queue", 256, "size of both virtqueues (a power of 2)")
	fs.IntVar(&o.rxBuf, "rx-buf", 0, "bytes of each RX buffer (default 4096 with MRG_RXBUF, else a whole frame)")
	fs.BoolVar(&o.noMrg, "no-mrg", false, "do not ack MRG_RXBUF")
	fs.BoolVar(&o.noOffload, "no-offload", false, "ack no checksum or segmentation offload")
	fs.BoolVar(&o.noEventIdx, "no-event-idx", false, "do not ack EVENT_IDX")
	fs.IntVar(&o.cycles, "cycles", 0, "start/stop cycles of the device before the real start")
	fs.StringVar(&o.hostile, "hostile", "", "hostile mode: the kind of violation (list: print them)")
	fs.BoolVar(&o.verbose, "v", false, "say what was negotiated, on standard error")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.hostile == "list" {
		return o, nil
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case o.socket == "":
		return o, errors.New("-socket PATH is required")
	case o.hostile == "" && o.netns == "":
		return o, errors.New("-netns NAME is required")
	case o.hostile != "" && hostileKind(o.hostile) == nil:
		return o, fmt.Errorf("-hostile %q: unknown kind (-hostile list prints them)", o.hostile)
	case o.tap == "" || len(o.tap) >= syscall.IFNAMSIZ:
		return o, fmt.Errorf("-tap %q: want 1 to %d characters", o.tap, syscall.IFNAMSIZ-1)
	case o.mtu < 68 || o.mtu > maxFrame-ethHdrLen:
		return o, fmt.Errorf("-mtu %d: want 68 to %d", o.mtu, maxFrame-ethHdrLen)
	case o.wait <= 0:
		return o, fmt.Errorf("-wait %v: want a positive duration", o.wait)
	case o.queue < 2 || o.queue > maxQueue || o.queue&(o.queue-1) != 0:
		return o, fmt.Errorf("-queue %d: want a power of 2 from 2 to %d", o.queue, maxQueue)
	case o.rxBuf != 0 && (o.rxBuf < minRxBuf || o.rxBuf > frameBufLen):
		return o, fmt.Errorf("-rx-buf %d: want %d to %d", o.rxBuf, minRxBuf, frameBufLen)
	case o.rxBuf != 0 && o.noMrg && o.rxBuf < vnetHdrLen+o.mtu+ethHdrLen:
		return o, fmt.Errorf("-rx-buf %d with -no-mrg: a frame of MTU %d needs %d", o.rxBuf, o.mtu, vnetHdrLen+o.mtu+ethHdrLen)
	case o.cycles < 0 || o.cycles > maxCycles:
		return o, fmt.Errorf("-cycles %d: want 0 to %d", o.cycles, maxCycles)
	}
	if *mac != "" {
		hw, err := net.ParseMAC(*mac)
		if err != nil || len(hw) != 6 {
			return o, fmt.Errorf("-mac %q: want an Ethernet address like 02:00:00:00:00:01", *mac)
		}
		o.mac = hw
	}
	if o.netns != "" && !strings.Contains(o.netns, "/") {
		o.netns = "/run/netns/" + o.netns
	}
	return o, nil
}

// run is the whole program on args, "ready" and hostile mode's line
// going to out. It returns nil at a clean end, else the error.
func run(args []string, out io.Writer) error {
	o, err := parse(args)
	if err != nil {
		return err
	}
	if o.hostile == "list" {
		for _, k := range hostileKinds {
			fmt.Fprintf(out, "%-14s %s\n", k.name, k.what)
		}
		return nil
	}
	if o.hostile != "" {
		return hostileMain(o, out)
	}
	return peerMain(o, out)
}
