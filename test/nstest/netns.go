// netns.go: named network namespaces, commands and Go code run inside them.

package nstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Netns is a named network namespace (/run/netns/NAME) created by a test
// and deleted at its cleanup. Methods that can fail take the (sub)test to
// fail and to hang cleanups on, so subtests can share a namespace.
type Netns struct {
	Name string
}

// nsSeq makes namespace names unique within this process.
var nsSeq atomic.Int64

// nsName returns "gopasst-<test>[-role]-<pid>", with characters that are not
// safe in a file name replaced and the test name shortened; seq > 0 appends
// "-<seq>".
func nsName(test, role string, pid int, seq int64) string {
	clean := func(s string, max int) string {
		b := []byte(s)
		for i, c := range b {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
				b[i] = '-'
			}
		}
		if len(b) > max {
			b = b[:max]
		}
		return string(b)
	}
	name := "gopasst-" + clean(test, 40)
	if role != "" {
		name += "-" + clean(role, 16)
	}
	name += "-" + strconv.Itoa(pid)
	if seq > 0 {
		name += "-" + strconv.FormatInt(seq, 10)
	}
	return name
}

// NewNetns creates an empty network namespace for test t (only lo, down)
// named after the test, role ("" for none) and our PID, and deletes it at
// cleanup. Processes the test started in it must be stopped by then (they
// are, when started with Start: cleanups run last-in first-out).
func NewNetns(t testing.TB, role string) *Netns {
	t.Helper()
	RequireRoot(t)
	var name string
	for {
		seq := nsSeq.Add(1) - 1
		name = nsName(t.Name(), role, os.Getpid(), seq)
		if !fileExists(filepath.Join("/run/netns", name)) {
			break
		}
		if seq > 100 {
			t.Fatalf("no free namespace name like %s", name)
		}
	}
	n := &Netns{Name: name}
	if out, err := runCmd(exec.Command("ip", "netns", "add", name)); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := runCmd(exec.Command("ip", "netns", "delete", name)); err != nil {
			t.Errorf("ip netns delete %s: %v\n%s", name, err, out)
		}
		if fileExists(n.Path()) {
			t.Errorf("namespace %s still present after delete", name)
		}
	})
	return n
}

// Path returns the namespace's file, for setns(2) or pasta --netns.
func (n *Netns) Path() string { return filepath.Join("/run/netns", n.Name) }

// runCmd runs cmd with CmdTimeout and returns its combined output.
func runCmd(cmd *exec.Cmd) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), CmdTimeout)
	defer cancel()
	c := exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
	c.WaitDelay = time.Second
	out, err := c.CombinedOutput()
	return string(out), err
}

// CmdFunc makes a command that runs inside some namespace: Netns.Cmd and
// Pasta.NSCmd are CmdFuncs.
type CmdFunc func(ctx context.Context, name string, args ...string) *exec.Cmd

// Cmd returns a command that runs name with args inside the namespace (via
// `ip netns exec`, which also bind-mounts /etc/netns/NAME/* over /etc). The
// context bounds it; WaitDelay keeps Wait from hanging on pipes a
// descendant keeps open.
func (n *Netns) Cmd(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	cmd.WaitDelay = time.Second
	return cmd
}

// Output runs name with args inside the namespace with CmdTimeout and
// returns its standard output; it fails t, with the command's output, if
// the command fails.
func (n *Netns) Output(t testing.TB, name string, args ...string) string {
	t.Helper()
	return output(t, n.Cmd, name, args...)
}

// output runs name with args through mk with CmdTimeout and returns its
// standard output, failing t with stderr if it fails.
func output(t testing.TB, mk CmdFunc, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), CmdTimeout)
	defer cancel()
	cmd := mk(ctx, name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s%s", strings.Join(cmd.Args, " "), err, out, stderr.String())
	}
	return string(out)
}

// Start starts name with args inside the namespace in the background, as a
// Proc of test t (see StartCmd: stopped by PID and reaped at t's cleanup).
// Through `ip netns exec`, which execs the command, the Proc's PID is the
// command's own.
func (n *Netns) Start(t testing.TB, name string, args ...string) *Proc {
	t.Helper()
	// No context: the Proc's cleanup ends it, with descendants.
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	cmd.Dir = os.TempDir()
	return StartCmd(t, cmd)
}

// Do runs fn on a thread inside the namespace and returns its error.
// Sockets fn opens stay in the namespace after it returns, and can be used
// from any goroutine.
func (n *Netns) Do(fn func() error) error {
	return DoIn(n.Path(), fn)
}

// DoIn runs fn on an OS thread that has entered the network namespace
// nsPath (/run/netns/NAME, /proc/PID/ns/net) and returns fn's error, or the
// error entering it. The thread is never given back to the Go scheduler:
// its goroutine ends locked, so the runtime ends the thread too.
func DoIn(nsPath string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: this thread is in another namespace now.
		fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open %s: %w", nsPath, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			errc <- fmt.Errorf("setns %s: %w", nsPath, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Listen opens a listener inside the namespace (as net.Listen does) and
// closes it at t's cleanup. It fails t on error.
func (n *Netns) Listen(t testing.TB, network, address string) net.Listener {
	t.Helper()
	ln, err := listenIn(n.Path(), network, address)
	if err != nil {
		t.Fatalf("listen %s %s in %s: %v", network, address, n.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// listenIn listens on network/address in namespace nsPath.
func listenIn(nsPath, network, address string) (net.Listener, error) {
	var ln net.Listener
	err := DoIn(nsPath, func() error {
		var err error
		ln, err = net.Listen(network, address)
		return err
	})
	return ln, err
}

// FreePort returns a port number free, at the time of the call, on every
// address of the namespace for network ("tcp" or "udp"), as the kernel
// picks ephemeral ports. It fails t on error.
func (n *Netns) FreePort(t testing.TB, network string) int {
	t.Helper()
	port, err := freePortIn(n.Path(), network)
	if err != nil {
		t.Fatalf("free %s port in %s: %v", network, n.Name, err)
	}
	return port
}

// freePortIn binds port 0 on the wildcard address for network in nsPath,
// and returns the port the kernel chose.
func freePortIn(nsPath, network string) (int, error) {
	port := 0
	err := DoIn(nsPath, func() error {
		switch network {
		case "tcp", "tcp4", "tcp6":
			ln, err := net.Listen(network, ":0")
			if err != nil {
				return err
			}
			port = ln.Addr().(*net.TCPAddr).Port
			return ln.Close()
		case "udp", "udp4", "udp6":
			c, err := net.ListenPacket(network, ":0")
			if err != nil {
				return err
			}
			port = c.LocalAddr().(*net.UDPAddr).Port
			return c.Close()
		}
		return errors.New("network must be tcp or udp")
	})
	return port, err
}
