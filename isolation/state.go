// What one of our processes tells the next: the sandboxed process (see
// doc.go, "Processes") learns from its environment that it is one, which
// descriptors it was handed and under which names, and where to report
// readiness. The variables are read and removed before main runs, so that
// nothing we start later (the command pasta runs) inherits them.

package isolation

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"gopasst/isolation/nsenter"
)

// Environment variables our own re-exec sets. They are removed as soon as
// they are read.
const (
	// envSandbox marks the sandboxed process and carries its state:
	// "status=FD;caps=HEX;uid=N;gid=N;fds=NAME:FD,NAME:FD".
	envSandbox = "GOPASST_SANDBOX"
	// envCaps asks isolation/nsenter's constructor to narrow the
	// capability sets to HEX before the Go runtime starts its threads.
	envCaps = "GOPASST_CAPS"
)

// inherited is what the sandboxed process was handed by the supervisor.
var inherited struct {
	sandbox  bool             // this process is the sandboxed one
	statusFD int              // write end of the readiness pipe, -1 if none
	caps     CapSet           // capabilities the supervisor meant us to keep
	uid, gid int              // final IDs as seen from the supervisor, -1 if unknown
	files    map[string]int   // carried descriptors by name
	used     map[string]bool  // names taken by Carry
	parseErr error            // malformed state: reported by Initial
	keep     map[int]struct{} // descriptors Initial must not close
}

func init() {
	inherited.statusFD, inherited.uid, inherited.gid = -1, -1, -1
	inherited.keep = map[int]struct{}{}
	v, ok := os.LookupEnv(envSandbox)
	if !ok {
		return
	}
	os.Unsetenv(envSandbox)
	inherited.sandbox = true
	inherited.files = map[string]int{}
	inherited.used = map[string]bool{}
	inherited.parseErr = parseState(v)
	// What we were handed must not leak further, to the command pasta
	// runs above all: it arrived without FD_CLOEXEC.
	for fd := range inherited.keep {
		unix.CloseOnExec(fd)
	}
}

// parseState fills inherited from the value of envSandbox, returning an error
// for anything malformed (it only ever comes from our own supervisor, so an
// error means a version mismatch between two binaries).
func parseState(v string) error {
	for _, kv := range strings.Split(v, ";") {
		if kv == "" {
			continue
		}
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("bad %s item %q", envSandbox, kv)
		}
		var err error
		switch k {
		case "status":
			inherited.statusFD, err = strconv.Atoi(val)
			inherited.keep[inherited.statusFD] = struct{}{}
		case "caps":
			var c uint64
			c, err = strconv.ParseUint(val, 16, 64)
			inherited.caps = CapSet(c)
		case "uid":
			inherited.uid, err = strconv.Atoi(val)
		case "gid":
			inherited.gid, err = strconv.Atoi(val)
		case "fds":
			for _, nf := range strings.Split(val, ",") {
				if nf == "" {
					continue
				}
				name, fd, ok := strings.Cut(nf, ":")
				n, e := strconv.Atoi(fd)
				if !ok || e != nil || n < 3 {
					return fmt.Errorf("bad %s descriptor %q", envSandbox, nf)
				}
				inherited.files[name] = n
				inherited.keep[n] = struct{}{}
			}
		default:
			return fmt.Errorf("unknown %s item %q", envSandbox, k)
		}
		if err != nil {
			return fmt.Errorf("bad %s item %q: %w", envSandbox, kv, err)
		}
	}
	return nil
}

// Sandboxed reports whether this process is the sandboxed one started by
// User, rather than the process the user invoked.
func Sandboxed() bool { return inherited.sandbox }

// Reexecuted reports whether this process is one of ours started by
// another that has parsed the same command line already: the sandboxed
// process, or the invoked process executed again to join a user
// namespace first. What is said about the options (warnings) is said by
// the first process only, not two or three times.
func Reexecuted() bool {
	joined, _ := nsenter.Joined()
	return inherited.sandbox || joined
}

// formatState builds the value of envSandbox for the sandboxed process.
func formatState(status int, keep CapSet, uid, gid int, files map[string]int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "status=%d;caps=%x;uid=%d;gid=%d;fds=", status, uint64(keep), uid, gid)
	first := true
	for name, fd := range files {
		if !first {
			b.WriteByte(',')
		}
		first = false
		fmt.Fprintf(&b, "%s:%d", name, fd)
	}
	return b.String()
}
