// The seccomp allow-lists: how code registers the system calls it makes, and
// the BPF program built from the registrations.

package isolation

import (
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"gopasst/datapath/config"
)

// Modes selects the allow-lists a registration goes to.
type Modes uint8

const (
	// Passt is the allow-list of passt mode (qemu socket, host sockets).
	Passt Modes = 1 << iota
	// Pasta is the allow-list of pasta mode (tap, splice, namespace).
	Pasta
	// Both is passt and pasta.
	Both = Passt | Pasta
)

// modesOf returns the Modes bit for a configuration mode.
func modesOf(m config.Mode) Modes {
	if m == config.ModePasta {
		return Pasta
	}
	return Passt
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

// rule is one registration.
type rule struct {
	modes   Modes
	why     string
	where   string    // file:line of the registration
	runtime bool      // the Go runtime's share, not our code's
	check   *ArgCheck // nil: any arguments
	errno   unix.Errno
}

// entry gathers the registrations of one syscall.
type entry struct {
	name  string
	nr    uint32
	rules []rule
}

var registry = map[string]*entry{}

// register records r for name; a name missing from this architecture's
// syscall table is a programming error, reported at start-up by panic (and
// by the unit tests long before).
func register(name string, r rule) {
	nr, ok := syscallNumbers[name]
	if !ok {
		panic(fmt.Sprintf("isolation: unknown syscall %q registered at %s", name, r.where))
	}
	e := registry[name]
	if e == nil {
		e = &entry{name: name, nr: nr}
		registry[name] = e
	}
	e.rules = append(e.rules, r)
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

// Allow adds syscall name to the allow-lists of modes, for the reason why.
// Call it from an init function in the file that makes the call, next to
// the code that needs it, so that a reader sees why every syscall is allowed:
//
//	func init() {
//		isolation.Allow(isolation.Both, "recvmmsg", "batch reads from host UDP sockets")
//	}
func Allow(modes Modes, name, why string) {
	register(name, rule{modes: modes, why: why, where: caller()})
}

// AllowArg is Allow for calls whose argument passes check only, as ioctl
// with one request number or clone with CLONE_THREAD set.
func AllowArg(modes Modes, name string, check ArgCheck, why string) {
	register(name, rule{modes: modes, why: why, where: caller(), check: &check})
}

// AllowInetSocket allows socket(2) for IPv4 and IPv6 sockets only: the
// family is the first argument, so a compromised process cannot open
// netlink, packet or UNIX sockets after the filter is in, even though new
// flows still need new sockets.
func AllowInetSocket(modes Modes, why string) {
	where := caller()
	for _, f := range []struct {
		af   uint32
		name string
	}{{unix.AF_INET, "AF_INET"}, {unix.AF_INET6, "AF_INET6"}} {
		register("socket", rule{modes: modes, why: why, where: where,
			check: &ArgCheck{Arg: 0, Mask: 0xffffffff, Value: f.af, Name: f.name}})
	}
}

// allowRuntime is Allow for the Go runtime's own syscalls, counted apart.
func allowRuntime(name, why string, check *ArgCheck) {
	register(name, rule{modes: Both, why: why, where: caller(), runtime: true, check: check})
}

// failWith makes name fail with errno instead of killing the process: for
// calls the runtime or the C library try first and fall back from (clone3).
func failWith(modes Modes, name string, errno unix.Errno, why string) {
	register(name, rule{modes: modes, why: why, where: caller(), errno: errno, runtime: true})
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

	failRuntime bool // the Errno was registered for the runtime
}

// Verdicts returns the allow-list of mode, sorted by syscall number.
func Verdicts(mode config.Mode) []Verdict {
	m := modesOf(mode)
	var out []Verdict
	for _, e := range registry {
		v := Verdict{Name: e.name, Nr: e.nr}
		unconditional := false
		for _, r := range e.rules {
			if r.modes&m == 0 {
				continue
			}
			if w := r.where + ": " + r.why; !slices.Contains(v.Why, w) {
				v.Why = append(v.Why, w)
			}
			if r.errno != 0 {
				v.Errno = r.errno
				v.failRuntime = r.runtime
				continue
			}
			if r.runtime {
				v.Runtime = true
			} else {
				v.Ours = true
			}
			if r.check == nil {
				unconditional = true
			} else if !slices.Contains(v.Checks, *r.check) {
				v.Checks = append(v.Checks, *r.check)
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

// Counts returns how many syscalls mode allows, and how many of those the Go
// runtime needs (some of which our code needs too).
func Counts(mode config.Mode) (allowed, runtimeShare, oursOnly int) {
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

// PrintSeccomp writes the allow-list of mode with the reason and place of
// every registration, then the counts: what --print-seccomp shows.
func PrintSeccomp(w io.Writer, mode config.Mode) {
	vs := Verdicts(mode)
	fmt.Fprintf(w, "seccomp allow-list for %s (%s), killing the process on anything else:\n", mode, auditArchName)
	for _, v := range vs {
		what := "allow"
		switch {
		case v.Errno != 0:
			what = "fail with " + unix.ErrnoName(v.Errno)
		case len(v.Checks) > 0:
			var cs []string
			for _, c := range v.Checks {
				cs = append(cs, c.Name)
			}
			what = "allow if " + strings.Join(cs, " or ")
		}
		who := "ours"
		if v.Runtime && v.Ours {
			who = "runtime+ours"
		} else if v.Runtime || v.failRuntime {
			who = "runtime"
		}
		fmt.Fprintf(w, "  %-18s %3d  %-7s %s\n", v.Name, v.Nr, who, what)
		for _, why := range v.Why {
			fmt.Fprintf(w, "      %s\n", why)
		}
	}
	allowed, rt, ours := Counts(mode)
	fmt.Fprintf(w, "%s: %d syscalls allowed: %d needed by the Go runtime, %d by gopasst alone (the C original: %d)\n",
		mode, allowed, rt, ours, cOriginalCount(mode))
}

// cOriginalCount is the number of syscalls the C original allows on x86_64,
// for comparison.
func cOriginalCount(mode config.Mode) int {
	if mode == config.ModePasta {
		return 43
	}
	return 34
}

// Offsets into struct seccomp_data.
const (
	offNr   = 0
	offArch = 4
	offArgs = 16 // args[i] at offArgs + 8*i; the low 32 bits come first
)

// x32SyscallBit marks x32 ABI syscall numbers on x86_64: never ours.
const x32SyscallBit = 0x40000000

// Seccomp return values.
const (
	retAllow = unix.SECCOMP_RET_ALLOW
	retKill  = unix.SECCOMP_RET_KILL_PROCESS
)

// insn is one BPF instruction whose jumps may name labels.
type insn struct {
	op       uint16
	k        uint32
	jt, jf   string // labels for conditional jumps ("" = next)
	ja       string // label for an unconditional jump
	label    string // this instruction's label
	hasLabel bool
}

// Filter builds the BPF program for mode: check the architecture, reject
// x32 numbers, find the syscall number by binary search among the allowed
// ones, check arguments where registered, and kill the process on anything
// else. It returns an error only if the program cannot be encoded.
func Filter(mode config.Mode) ([]unix.SockFilter, error) {
	vs := Verdicts(mode)
	var prog []insn
	emit := func(i insn) { prog = append(prog, i) }
	lbl := func(name string) { prog = append(prog, insn{label: name, hasLabel: true}) }

	emit(insn{op: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, k: offArch})
	emit(insn{op: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, k: auditArch, jf: "kill"})
	emit(insn{op: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, k: offNr})
	emit(insn{op: unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K, k: x32SyscallBit, jt: "kill"})

	target := func(v Verdict) string {
		switch {
		case v.Errno != 0:
			return fmt.Sprintf("errno_%d", v.Errno)
		case len(v.Checks) > 0:
			return "check_" + v.Name
		}
		return "allow"
	}
	// The search tree: compare with the middle number, left half falls
	// through, right half is jumped to; small groups are compared in turn.
	var tree func(vs []Verdict, id string)
	tree = func(vs []Verdict, id string) {
		if len(vs) <= 4 {
			for _, v := range vs {
				emit(insn{op: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, k: v.Nr, jt: target(v)})
			}
			emit(insn{op: unix.BPF_JMP | unix.BPF_JA, ja: "kill"})
			return
		}
		mid := len(vs) / 2
		right := id + "r"
		emit(insn{op: unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K, k: vs[mid].Nr, jt: right})
		tree(vs[:mid], id+"l")
		lbl(right)
		tree(vs[mid:], right)
	}
	tree(vs, "t")

	lbl("allow")
	emit(insn{op: unix.BPF_RET | unix.BPF_K, k: retAllow})
	errnos := map[unix.Errno]bool{}
	for _, v := range vs {
		if v.Errno != 0 && !errnos[v.Errno] {
			errnos[v.Errno] = true
			lbl(target(v))
			emit(insn{op: unix.BPF_RET | unix.BPF_K, k: unix.SECCOMP_RET_ERRNO | uint32(v.Errno)})
		}
		if len(v.Checks) == 0 || v.Errno != 0 {
			continue
		}
		// Jumps go forward only: each block ends with its own returns.
		lbl(target(v))
		for _, c := range v.Checks {
			emit(insn{op: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, k: uint32(offArgs + 8*c.Arg)})
			if c.Mask != 0xffffffff {
				emit(insn{op: unix.BPF_ALU | unix.BPF_AND | unix.BPF_K, k: c.Mask})
			}
			emit(insn{op: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, k: c.Value, jt: "pass_" + v.Name})
		}
		emit(insn{op: unix.BPF_RET | unix.BPF_K, k: retKill})
		lbl("pass_" + v.Name)
		emit(insn{op: unix.BPF_RET | unix.BPF_K, k: retAllow})
	}
	lbl("kill")
	emit(insn{op: unix.BPF_RET | unix.BPF_K, k: retKill})

	return assemble(prog)
}

// assemble resolves labels into jump offsets. Conditional jumps reach at
// most 255 instructions ahead; the tree keeps them short.
func assemble(prog []insn) ([]unix.SockFilter, error) {
	pos := map[string]int{}
	n := 0
	for _, i := range prog {
		if i.hasLabel {
			pos[i.label] = n
			continue
		}
		n++
	}
	out := make([]unix.SockFilter, 0, n)
	pc := 0
	rel := func(label string) (int, error) {
		if label == "" {
			return 0, nil
		}
		t, ok := pos[label]
		if !ok {
			return 0, fmt.Errorf("seccomp: no label %q", label)
		}
		if t <= pc {
			return 0, fmt.Errorf("seccomp: backward jump to %q", label)
		}
		return t - pc - 1, nil
	}
	for _, i := range prog {
		if i.hasLabel {
			continue
		}
		f := unix.SockFilter{Code: i.op, K: i.k}
		if i.ja != "" {
			d, err := rel(i.ja)
			if err != nil {
				return nil, err
			}
			f.K = uint32(d)
		} else if i.op&0x07 == unix.BPF_JMP {
			jt, err := rel(i.jt)
			if err != nil {
				return nil, err
			}
			jf, err := rel(i.jf)
			if err != nil {
				return nil, err
			}
			if jt > 255 || jf > 255 {
				return nil, fmt.Errorf("seccomp: jump too long at %d", pc)
			}
			f.Jt, f.Jf = uint8(jt), uint8(jf)
		}
		out = append(out, f)
		pc++
	}
	if len(out) > unix.BPF_MAXINSNS {
		return nil, fmt.Errorf("seccomp: program of %d instructions is too long", len(out))
	}
	return out, nil
}
