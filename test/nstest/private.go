package nstest

import (
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// EnterPrivate moves the calling test goroutine, locked to its thread for
// good, into a new network namespace with lo up, so that every socket the
// test creates lives there: no free ports are needed on the machine and
// nothing is left behind, as the namespace goes away with the thread when
// the goroutine ends. pingRange, if not empty, is written to the
// namespace's net.ipv4.ping_group_range (/proc/sys/net follows the calling
// thread's namespace). It returns once ::1 can be bound, and skips the test
// without CAP_SYS_ADMIN.
//
// The test binary's main goroutine must stay on the main thread (lock it in
// an init function): a locked goroutine that exits takes its thread away,
// which must never be the main one.
func EnterPrivate(t testing.TB, pingRange string) {
	t.Helper()
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		t.Skipf("cannot create a network namespace (needs CAP_SYS_ADMIN): %v", err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatal(err)
	}
	if pingRange != "" {
		if err := os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte(pingRange), 0); err != nil {
			t.Fatal(err)
		}
	}
	// ::1 appears when lo comes up, but wait until it can be bound.
	for i := 0; i < 100; i++ {
		s, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return // no IPv6 at all: IPv6 tests skip on their own
		}
		err = unix.Bind(s, &unix.SockaddrInet6{Addr: netip.IPv6Loopback().As16()})
		unix.Close(s)
		if err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
