// tun.go: /dev/net/tun for the rootless tests (and for the tests of what a
// user meets with it 0600: NarrowTun). These images ship it 0600,
// where Debian's default is 0666; a user's machine may be either. The
// tests leave the device as they found it: only a test that runs pasta as
// TestUser widens it, for its own duration, and the original mode comes
// back when the last such test, in any test process, is done.

package nstest

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// tunDevice is the device the rootless tests need.
const tunDevice = "/dev/net/tun"

// Files that coordinate the widening between test processes (go test runs
// packages in parallel): a lock, held shared by every test that needs the
// device wide and exclusively to widen or restore it, and the mode found
// before the first widening.
const (
	tunLock = "/tmp/gopasst-tun.lock"
	tunOrig = "/tmp/gopasst-tun.orig"
)

// WidenTun makes /dev/net/tun usable by every user (0666, as Debian ships
// it) until t ends, for tests that run pasta unprivileged; when the last
// test that asked ends, in whatever test process, the device gets back the
// mode it had before the first. It skips t if it cannot (not root, no
// device).
func WidenTun(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes /dev/net/tun usable by the unprivileged test user for the test's duration")
	}
	// Within one process the hold is counted: the file lock is taken
	// once (a second flock on another descriptor of the same file would
	// wait for our own), and given back with the last hold.
	widened.Lock()
	defer widened.Unlock()
	if widened.n > 0 {
		widened.n++
		t.Cleanup(releaseWide)
		return
	}
	lock := lockTunExclusive(t)
	fd := int(lock.Fd())
	st, err := os.Stat(tunDevice)
	if err != nil {
		unix.Flock(fd, unix.LOCK_UN)
		lock.Close()
		t.Skipf("%s: %v", tunDevice, err)
	}
	if _, err := os.Stat(tunOrig); os.IsNotExist(err) {
		// The first widener records what it found.
		os.WriteFile(tunOrig, []byte(fmt.Sprintf("%o\n", st.Mode().Perm())), 0o600)
	}
	if err := os.Chmod(tunDevice, 0o666); err != nil {
		unix.Flock(fd, unix.LOCK_UN)
		lock.Close()
		t.Skipf("chmod %s: %v", tunDevice, err)
	}
	// Shared from now on, for as long as the test runs: an exclusive
	// lock (restoring) waits for every test that needs the device wide.
	unix.Flock(fd, unix.LOCK_SH)
	widened.n, widened.lock = 1, lock
	t.Cleanup(releaseWide)
}

// lockTunExclusive opens the lock file shared by every test process and
// takes it exclusively (waiting for the tests that hold the device wide);
// it skips t if it cannot.
func lockTunExclusive(t testing.TB) *os.File {
	t.Helper()
	lock, err := os.OpenFile(tunLock, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Skipf("/dev/net/tun lock %s: %v", tunLock, err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		lock.Close()
		t.Skipf("/dev/net/tun lock: %v", err)
	}
	return lock
}

// widened is this process's hold on the wide device: how many tests hold
// it, and the lock file they share.
var widened struct {
	sync.Mutex
	n    int
	lock *os.File
}

// releaseWide ends one test's hold; the last one lets the file lock go
// and maybe restores the mode (restoreTun).
func releaseWide() {
	widened.Lock()
	defer widened.Unlock()
	widened.n--
	if widened.n == 0 {
		restoreTun(widened.lock)
		widened.lock = nil
	}
}

// restoreTun releases a test's hold on the wide device and, if no other
// test holds it, puts the original mode back.
func restoreTun(lock *os.File) {
	defer lock.Close()
	fd := int(lock.Fd())
	// Try to become exclusive: that fails while another test holds the
	// device wide. Let go first, then try once more, so that of two
	// tests ending together one restores (the lock cannot be upgraded by
	// both at once).
	if unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) != nil {
		unix.Flock(fd, unix.LOCK_UN)
		if unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) != nil {
			return // still held: the last one restores
		}
	}
	defer unix.Flock(fd, unix.LOCK_UN)
	b, err := os.ReadFile(tunOrig)
	if err != nil {
		return // restored already by a test that ended with us
	}
	if m, err := strconv.ParseUint(strings.TrimSpace(string(b)), 8, 32); err == nil {
		os.Chmod(tunDevice, os.FileMode(m))
	}
	os.Remove(tunOrig)
}

// NarrowTun makes /dev/net/tun 0600, as these images ship it, for t's
// duration, holding off every test that would widen it meanwhile (in any
// test process: WidenTun waits), and then puts the mode it found back: for
// tests of what a user on such a machine meets. It skips t if it cannot.
func NarrowTun(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: sets the mode of /dev/net/tun for the test's duration")
	}
	widened.Lock()
	held := widened.n
	widened.Unlock()
	if held > 0 {
		t.Fatal("NarrowTun inside a test that holds /dev/net/tun wide (WidenTun): it would wait for itself")
	}
	lock := lockTunExclusive(t)
	fd := int(lock.Fd())
	st, err := os.Stat(tunDevice)
	if err == nil {
		err = os.Chmod(tunDevice, 0o600)
	}
	if err != nil {
		unix.Flock(fd, unix.LOCK_UN)
		lock.Close()
		t.Skipf("%s: %v", tunDevice, err)
	}
	t.Cleanup(func() {
		os.Chmod(tunDevice, st.Mode().Perm())
		unix.Flock(fd, unix.LOCK_UN)
		lock.Close()
	})
}
