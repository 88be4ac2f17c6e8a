// Package allow is the registry of the seccomp allow-lists: every system
// call gopasst makes once its filter is in (isolation.Postfork) is
// registered here by the code that makes it, with the reason, next to the
// call. isolation builds the filter from what is registered; --print-seccomp
// prints it with the place of every registration.
//
// It is a leaf: it imports no package of ours, so that the datapath can
// annotate its calls without importing the isolation stages, and isolation
// can read the registrations without importing the datapath. Whatever the
// binary links registers: the allow-list is a property of the program, not
// of a configuration file.
//
// A registration sits beside the function that needs it, as a package-level
// declaration, so that the place it records is the call site:
//
//	var _ = allow.Syscall(allow.Both, "recvmmsg", "Recvmmsg: host datagrams in batches")
//
//	// Recvmmsg receives ...
//	func Recvmmsg(fd int, m *batch.Msgs, n, flags int) (int, unix.Errno) { ... }
package allow

import (
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"sort"

	"golang.org/x/sys/unix"
)

// Mode selects the allow-lists a registration goes to.
type Mode uint8

const (
	// Passt is the allow-list of passt mode (guest socket, host sockets).
	Passt Mode = 1 << iota
	// Pasta is the allow-list of pasta mode (tap, namespace, host sockets).
	Pasta
	// Both is passt and pasta.
	Both = Passt | Pasta
)

// String returns "passt", "pasta" or "passt+pasta".
func (m Mode) String() string {
	switch m {
	case Passt:
		return "passt"
	case Pasta:
		return "pasta"
	case Both:
		return "passt+pasta"
	}
	return fmt.Sprintf("mode %#x", uint8(m))
}

// ArgCheck restricts a syscall to calls whose argument Arg (0-5), low 32
// bits, satisfies (arg & Mask) == Value. Several checks registered for one
// syscall are alternatives: the call is allowed if any holds.
type ArgCheck struct {
	Arg   int
	Mask  uint32
	Value uint32
	Name  string // what the check means, for the printed list
}

// Registration is one call of Syscall, SyscallArg, InetSocket, Runtime or
// FailWith.
type Registration struct {
	Name    string     // the syscall
	Modes   Mode       // the lists it goes to
	Why     string     // the reason, as given
	Where   string     // "dir/file.go:line" of the registration: the call site
	Runtime bool       // the Go runtime's share, not our code's
	Check   *ArgCheck  // nil: any arguments
	Errno   unix.Errno // non-zero: fail with this error instead of allowing
}

// entry gathers the registrations of one syscall.
type entry struct {
	nr   uint32
	regs []Registration
}

var registry = map[string]*entry{}

// unknownArch is set where no syscall table exists (syscalls_other.go):
// registrations are then ignored and the filter cannot be built.
var unknownArch = len(syscallNumbers) == 0

// Known reports whether this architecture has a syscall table, so that a
// filter can be built.
func Known() bool { return !unknownArch }

// register records r; a name missing from this architecture's syscall table
// is a programming error, reported at start-up by panic (and by the unit
// tests long before).
func register(r Registration) struct{} {
	if unknownArch {
		return struct{}{}
	}
	nr, ok := syscallNumbers[r.Name]
	if !ok {
		panic(fmt.Sprintf("allow: unknown syscall %q registered at %s", r.Name, r.Where))
	}
	e := registry[r.Name]
	if e == nil {
		e = &entry{nr: nr}
		registry[r.Name] = e
	}
	e.regs = append(e.regs, r)
	return struct{}{}
}

// caller returns "dir/file.go:line" of the code that called the registering
// function, so the printed list points at each annotation.
func caller() string {
	_, file, line, ok := runtime.Caller(2)
	if !ok {
		return "?"
	}
	return fmt.Sprintf("%s/%s:%d", filepath.Base(filepath.Dir(file)), filepath.Base(file), line)
}

// Syscall adds syscall name to the allow-lists of modes, for the reason why.
// Declare it beside the function that makes the call (the result is only
// there so that it can be a package-level declaration, var _ = ...).
func Syscall(modes Mode, name, why string) struct{} {
	return register(Registration{Name: name, Modes: modes, Why: why, Where: caller()})
}

// SyscallArg is Syscall for calls whose argument passes check only, as
// ioctl with one request number.
func SyscallArg(modes Mode, name string, check ArgCheck, why string) struct{} {
	return register(Registration{Name: name, Modes: modes, Why: why, Where: caller(), Check: &check})
}

// InetSocket allows socket(2) for IPv4 and IPv6 sockets only: the family
// is the first argument, so a compromised process cannot open netlink,
// packet or UNIX sockets after the filter is in, even though new flows
// still need new sockets.
func InetSocket(modes Mode, why string) struct{} {
	where := caller()
	for _, f := range []struct {
		af   uint32
		name string
	}{{unix.AF_INET, "AF_INET"}, {unix.AF_INET6, "AF_INET6"}} {
		register(Registration{Name: "socket", Modes: modes, Why: why, Where: where,
			Check: &ArgCheck{Arg: 0, Mask: 0xffffffff, Value: f.af, Name: f.name}})
	}
	return struct{}{}
}

// Runtime is Syscall for the Go runtime's own calls, counted apart, in both
// modes; check, if not nil, restricts the arguments.
func Runtime(name, why string, check *ArgCheck) struct{} {
	return register(Registration{Name: name, Modes: Both, Why: why, Where: caller(), Runtime: true, Check: check})
}

// FailWith makes name fail with errno instead of killing the process: for
// calls the runtime or the C library try first and fall back from (clone3).
func FailWith(modes Mode, name string, errno unix.Errno, why string) struct{} {
	return register(Registration{Name: name, Modes: modes, Why: why, Where: caller(), Errno: errno, Runtime: true})
}

// Registrations returns every registration, sorted by syscall name and then
// by place.
func Registrations() []Registration {
	var out []Registration
	for _, e := range registry {
		out = append(out, e.regs...)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Where < out[j].Where
	})
	return out
}

// Verdict is how the filter treats one syscall in one mode.
type Verdict struct {
	Name    string
	Nr      uint32
	Checks  []ArgCheck // allowed only if one holds; empty: always allowed
	Errno   unix.Errno // non-zero: fails with this error instead
	Runtime bool       // needed by the Go runtime
	Ours    bool       // needed by gopasst's own code
	Why     []string   // "where: why" for each registration
	// FailRuntime: the Errno was registered for the runtime.
	FailRuntime bool
}

// Verdicts returns the allow-list of mode (Passt or Pasta), sorted by
// syscall number.
func Verdicts(mode Mode) []Verdict {
	var out []Verdict
	for name, e := range registry {
		v := Verdict{Name: name, Nr: e.nr}
		unconditional := false
		for _, r := range e.regs {
			if r.Modes&mode == 0 {
				continue
			}
			if w := r.Where + ": " + r.Why; !slices.Contains(v.Why, w) {
				v.Why = append(v.Why, w)
			}
			if r.Errno != 0 {
				v.Errno = r.Errno
				v.FailRuntime = r.Runtime
				continue
			}
			if r.Runtime {
				v.Runtime = true
			} else {
				v.Ours = true
			}
			if r.Check == nil {
				unconditional = true
			} else if !slices.Contains(v.Checks, *r.Check) {
				v.Checks = append(v.Checks, *r.Check)
			}
		}
		if len(v.Why) == 0 {
			continue
		}
		if unconditional {
			v.Checks = nil
		}
		if v.Runtime || v.Ours {
			v.Errno = 0
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Nr < out[j].Nr })
	return out
}

// Counts returns how many syscalls mode allows, how many of those the Go
// runtime needs (some of which our code needs too), and how many only our
// code needs.
func Counts(mode Mode) (allowed, runtimeShare, oursOnly int) {
	for _, v := range Verdicts(mode) {
		if v.Errno != 0 {
			continue
		}
		allowed++
		if v.Runtime {
			runtimeShare++
		} else {
			oursOnly++
		}
	}
	return
}

// Number returns the number of syscall name on this architecture.
func Number(name string) (uint32, bool) {
	nr, ok := syscallNumbers[name]
	return nr, ok
}
