// The vhost-user back end's command line and life cycle on the real
// binary, under its sandbox and seccomp filter: --print-capabilities, the
// migration options refused, and a front end that connects, is answered,
// goes, and is followed by the next one (or, with -1, ends the run with
// status 0). The front end here only speaks the first request of the
// handshake; the full one, with rings and traffic, is test/vhostpeer's.

package test

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/test/nstest"
)

func TestVhostUserCommandLine(t *testing.T) {
	passt := nstest.Binary(t, "passt")
	out, err := exec.Command(passt, "--print-capabilities").Output()
	if err != nil {
		t.Fatalf("--print-capabilities: %v", err)
	}
	var caps map[string]any
	if err := json.Unmarshal(out, &caps); err != nil || len(caps) != 1 || caps["type"] != "net" {
		t.Fatalf("--print-capabilities printed %q (%v), want {\"type\": \"net\"}", out, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--vhost-user", "--migrate-exit"}, "passt: --migrate-exit: not implemented yet\n"},
		{[]string{"--vhost-user", "--migrate-no-linger"}, "passt: --migrate-no-linger: not implemented yet\n"},
		{[]string{"--repair-path", "/tmp/r", "--vhost-user"}, "passt: --repair-path: not implemented yet\n"},
		{[]string{"--migrate-exit"}, "passt: --migrate-exit: is for vhost-user mode only\n"},
	} {
		cmd := exec.Command(passt, append(tc.args, "-f")...)
		b, err := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != 1 || string(b) != tc.want {
			t.Errorf("passt %s: status %d (%v), output %q, want 1 and %q", strings.Join(tc.args, " "), code, err, b, tc.want)
		}
	}
}

// vhostDial connects to the back end at path, sends GET_FEATURES and
// checks the reply: flags exactly version 1 | REPLY, the request echoed,
// VERSION_1 and PROTOCOL_FEATURES offered. Returns the connection.
func vhostDial(t *testing.T, path string) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(nstest.CmdTimeout)
	for {
		if err = unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("connect %s: %v", path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	tv := unix.Timeval{Sec: 10}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	var m [12]byte
	binary.NativeEndian.PutUint32(m[0:], 1) // GET_FEATURES
	binary.NativeEndian.PutUint32(m[4:], 1) // version 1
	if _, err := unix.Write(fd, m[:]); err != nil {
		t.Fatal(err)
	}
	var r [20]byte
	n, err := unix.Read(fd, r[:])
	if err != nil || n != 20 {
		t.Fatalf("GET_FEATURES reply: %d bytes, %v", n, err)
	}
	req, flags, size := binary.NativeEndian.Uint32(r[0:]), binary.NativeEndian.Uint32(r[4:]), binary.NativeEndian.Uint32(r[8:])
	features := binary.NativeEndian.Uint64(r[12:])
	if req != 1 || flags != 5 || size != 8 || features&(1<<32|1<<30) != 1<<32|1<<30 {
		t.Fatalf("GET_FEATURES reply: request %d flags %#x size %d features %#x", req, flags, size, features)
	}
	return fd
}

// vhostSocketDir makes a directory under /tmp the sandboxed passt (nobody
// once it dropped root) may create its socket in.
func vhostSocketDir(t *testing.T) string {
	dir, err := os.MkdirTemp("/tmp", "gopasst-vhost-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestVhostUserLifeCycle(t *testing.T) {
	passt := nstest.Binary(t, "passt")
	t.Run("reconnect", func(t *testing.T) {
		sock := filepath.Join(vhostSocketDir(t), "vu.sock")
		p := nstest.StartCmd(t, exec.Command(passt, "-f", "-q", "--vhost-user", "-s", sock))
		c1 := vhostDial(t, sock)
		// A second front end while one is connected: accepted and
		// closed at once.
		c2, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		defer unix.Close(c2)
		if err := unix.Connect(c2, &unix.SockaddrUnix{Name: sock}); err != nil {
			t.Fatal(err)
		}
		tv := unix.Timeval{Sec: 10}
		unix.SetsockoptTimeval(c2, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		var b [1]byte
		if n, err := unix.Read(c2, b[:]); n != 0 || err != nil {
			t.Fatalf("second front end: read %d, %v; want end of file", n, err)
		}
		unix.Close(c1)
		// The next one is served from scratch.
		c3 := vhostDial(t, sock)
		unix.Close(c3)
		if p.Exited() {
			t.Fatalf("passt exited:\n%s", p.Output())
		}
	})
	t.Run("one-off", func(t *testing.T) {
		sock := filepath.Join(vhostSocketDir(t), "vu.sock")
		p := nstest.StartCmd(t, exec.Command(passt, "-f", "-q", "--vhost-user", "-1", "-s", sock))
		c := vhostDial(t, sock)
		unix.Close(c)
		code, err := p.Wait(nstest.CmdTimeout)
		if err != nil || code != 0 {
			t.Fatalf("after the front end went: status %d, %v\n%s", code, err, p.Output())
		}
	})
}
