// The seccomp filter: the BPF program built from the allow-lists registered
// with isolation/allow, and the printed form of the lists.

package isolation

import (
	"fmt"
	"io"
	"strings"

	"golang.org/x/sys/unix"

	"gopasst/isolation/allow"
)

// PrintSeccomp writes the allow-list of mode with the reason and place of
// every registration, then the counts: what --print-seccomp shows.
func PrintSeccomp(w io.Writer, mode allow.Mode) {
	vs := allow.Verdicts(mode)
	fmt.Fprintf(w, "seccomp allow-list for %s (%s), killing the process on anything else:\n", mode, allow.AuditArchName)
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
		} else if v.Runtime || v.FailRuntime {
			who = "runtime"
		}
		fmt.Fprintf(w, "  %-18s %3d  %-7s %s\n", v.Name, v.Nr, who, what)
		for _, why := range v.Why {
			fmt.Fprintf(w, "      %s\n", why)
		}
	}
	allowed, rt, ours := allow.Counts(mode)
	fmt.Fprintf(w, "%s: %d syscalls allowed: %d needed by the Go runtime, %d by gopasst alone (the C original: %d)\n",
		mode, allowed, rt, ours, cOriginalCount(mode))
}

// cOriginalCount is the number of syscalls the C original allows on x86_64,
// for comparison.
func cOriginalCount(mode allow.Mode) int {
	if mode == allow.Pasta {
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
func Filter(mode allow.Mode) ([]unix.SockFilter, error) {
	vs := allow.Verdicts(mode)
	var prog []insn
	emit := func(i insn) { prog = append(prog, i) }
	lbl := func(name string) { prog = append(prog, insn{label: name, hasLabel: true}) }

	emit(insn{op: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, k: offArch})
	emit(insn{op: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, k: allow.AuditArch, jf: "kill"})
	emit(insn{op: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, k: offNr})
	emit(insn{op: unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K, k: x32SyscallBit, jt: "kill"})

	target := func(v allow.Verdict) string {
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
	var tree func(vs []allow.Verdict, id string)
	tree = func(vs []allow.Verdict, id string) {
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
