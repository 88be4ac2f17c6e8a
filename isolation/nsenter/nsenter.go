//go:build cgo

// Package nsenter joins an existing user namespace before the Go runtime
// starts, which a running Go process cannot do: setns(CLONE_NEWUSER) fails
// in a multi-threaded process, and the runtime has threads before main. A C
// constructor, run by the dynamic loader before the runtime's own start-up,
// does it while the process is still single-threaded, as runc's nsenter
// does.
//
// The constructor is inert unless our own re-exec asks for it through
// GOPASST_NSENTER_USERNS (the path of the namespace to join); it removes the
// variable, since a second join of the namespace we are in fails with
// EINVAL. It also narrows the capability sets when GOPASST_CAPS asks
// (hexadecimal mask): done there, before any thread exists, the narrowing
// holds for every thread the runtime starts later, which a capset() from
// Go (one thread only) cannot achieve.
//
// If the program is linked internally (-ldflags=-linkmode=internal) the
// constructor never runs: init notices the variable still set and Err
// reports it. Builds without cgo get a stub reporting the feature missing.
package nsenter

/*
#cgo CFLAGS: -Wall -O2
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/capability.h>

// State left for Go: 0 not asked, 1 done, negative errno on failure.
int gopasst_userns_state;
int gopasst_caps_state;

// gopasst_narrow_caps() - Keep only @keep in the effective and permitted
// sets, empty the inheritable set. Return: 1, or negative errno.
static int gopasst_narrow_caps(uint64_t keep)
{
	struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct data[2];
	int i;

	if (syscall(SYS_capget, &hdr, data))
		return -errno;
	for (i = 0; i < 2; i++) {
		data[i].effective &= (uint32_t)(keep >> (32 * i));
		data[i].permitted &= (uint32_t)(keep >> (32 * i));
		data[i].inheritable = 0;
	}
	if (syscall(SYS_capset, &hdr, data))
		return -errno;
	return 1;
}

// gopasst_size_fdtable() - Grow the descriptor table to hold @n entries.
//
// Why here: the kernel grows a process's descriptor table when a new
// descriptor does not fit (at 64, 128, 256, 512, ...), and when the table
// is shared, as it is by the threads of a Go program, it waits for an RCU
// grace period first (expand_fdtable(): synchronize_rcu() when
// files->count > 1): 6 to 15 ms on the machines measured, paid twice or
// three times on the way to the ~300 descriptors of pasta's pools. Before
// the Go runtime starts, the process has one thread and the same growth
// costs no wait. Best effort: a failure leaves the table to grow later.
static void gopasst_size_fdtable(long n)
{
	int src, fd;

	if (n <= 64 || n > 1 << 20)
		return;
	src = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (src < 0)
		return;
	fd = fcntl(src, F_DUPFD_CLOEXEC, (int)(n - 1));
	if (fd >= 0)
		close(fd);
	close(src);
}

// gopasst_nsenter() - Join the user namespace at $GOPASST_NSENTER_USERNS,
// then narrow capabilities to $GOPASST_CAPS, and size the descriptor table
// for $GOPASST_FDTABLE descriptors, each only if asked. Runs before the Go
// runtime, single-threaded; errors are left for Go to report.
__attribute__((constructor)) static void gopasst_nsenter(void)
{
	const char *path = getenv("GOPASST_NSENTER_USERNS");
	const char *caps = getenv("GOPASST_CAPS");
	const char *fdt = getenv("GOPASST_FDTABLE");

	if (fdt) {
		gopasst_size_fdtable(strtol(fdt, NULL, 10));
		unsetenv("GOPASST_FDTABLE");
	}

	if (path) {
		int fd = open(path, O_RDONLY | O_CLOEXEC);

		if (fd < 0) {
			gopasst_userns_state = -errno;
		} else {
			if (setns(fd, CLONE_NEWUSER))
				gopasst_userns_state = -errno;
			else
				gopasst_userns_state = 1;
			close(fd);
		}
		unsetenv("GOPASST_NSENTER_USERNS");
	}

	if (caps) {
		char *end;
		unsigned long long keep = strtoull(caps, &end, 16);

		if (*caps && !*end)
			gopasst_caps_state = gopasst_narrow_caps(keep);
		else
			gopasst_caps_state = -EINVAL;
		unsetenv("GOPASST_CAPS");
	}
}

// gopasst_malloc_one_arena() - Keep glibc's malloc from sizing new arenas
// by the CPU count, which it reads from /sys in new threads: seccomp kills
// that open once in place. Return: mallopt()'s result, 1 on success.
static int gopasst_malloc_one_arena(void)
{
	return mallopt(M_ARENA_MAX, 1);
}
*/
import "C"

import (
	"fmt"
	"os"
	"syscall"
)

// Available reports whether this build can join a user namespace.
const Available = true

// initErr is set when a join was asked for but the constructor did not run.
var initErr error

func init() {
	if _, ok := os.LookupEnv(EnvUserNS); ok && C.gopasst_userns_state == 0 {
		initErr = fmt.Errorf("joining a user namespace: the constructor did not run (internally linked build?)")
	}
	// glibc's unsetenv edits the array the runtime read too; make sure.
	os.Unsetenv(EnvUserNS)
	os.Unsetenv(EnvCaps)
	os.Unsetenv(EnvFDTable)
}

// Joined reports whether the constructor joined a user namespace in this
// process, and the error if it was asked to and failed.
func Joined() (bool, error) {
	if initErr != nil {
		return false, initErr
	}
	switch s := int(C.gopasst_userns_state); {
	case s > 0:
		return true, nil
	case s < 0:
		return false, fmt.Errorf("joining user namespace: %w", syscall.Errno(-s))
	}
	return false, nil
}

// CapsNarrowed reports whether the constructor narrowed the capability sets
// of the whole process, and its error if that failed.
func CapsNarrowed() (bool, error) {
	switch s := int(C.gopasst_caps_state); {
	case s > 0:
		return true, nil
	case s < 0:
		return false, fmt.Errorf("narrowing capabilities at start: %w", syscall.Errno(-s))
	}
	return false, nil
}

// BeforeSeccomp prepares the C library for a seccomp filter that allows no
// file access: threads started later (pthread_create, with cgo) would
// otherwise open /sys/devices/system/cpu/online from malloc, to size a new
// arena. One arena is plenty: C code here only starts threads.
func BeforeSeccomp() error {
	if C.gopasst_malloc_one_arena() != 1 {
		return fmt.Errorf("mallopt(M_ARENA_MAX) failed")
	}
	return nil
}
