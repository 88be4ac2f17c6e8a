// The filter program, run in golang.org/x/net/bpf's interpreter.

package isolation

import (
	"encoding/binary"
	"strings"
	"testing"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"gopasst/datapath/config"
)

// vm assembles mode's filter into an interpreter.
func vm(t *testing.T, mode config.Mode) *bpf.VM {
	t.Helper()
	prog, err := Filter(mode)
	if err != nil {
		t.Fatal(err)
	}
	insns := make([]bpf.Instruction, len(prog))
	for i, f := range prog {
		insns[i] = bpf.RawInstruction{Op: f.Code, Jt: f.Jt, Jf: f.Jf, K: f.K}.Disassemble()
	}
	v, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatalf("interpreter refuses the program: %v", err)
	}
	return v
}

// data builds a struct seccomp_data. The interpreter loads words
// big-endian where the kernel loads them in native (little-endian) order,
// so each 32-bit field is stored big-endian: both then see the same values.
func data(arch uint32, nr uint32, args ...uint64) []byte {
	b := make([]byte, 64)
	binary.BigEndian.PutUint32(b[offNr:], nr)
	binary.BigEndian.PutUint32(b[offArch:], arch)
	for i, a := range args {
		binary.BigEndian.PutUint32(b[offArgs+8*i:], uint32(a))
		binary.BigEndian.PutUint32(b[offArgs+8*i+4:], uint32(a>>32))
	}
	return b
}

// run returns the filter's verdict for one call.
func run(t *testing.T, v *bpf.VM, arch, nr uint32, args ...uint64) uint32 {
	t.Helper()
	r, err := v.Run(data(arch, nr, args...))
	if err != nil {
		t.Fatal(err)
	}
	return uint32(r)
}

func TestFilterVerdicts(t *testing.T) {
	const threadFlags = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND |
		unix.CLONE_SYSVSEM | unix.CLONE_THREAD | unix.CLONE_SETTLS | unix.CLONE_PARENT_SETTID | unix.CLONE_CHILD_CLEARTID
	enosys := uint32(unix.SECCOMP_RET_ERRNO) | uint32(unix.ENOSYS)
	cases := []struct {
		name string
		mode config.Mode
		arch uint32
		nr   uint32
		args []uint64
		want uint32
	}{
		{"read", config.ModePasst, auditArch, unix.SYS_READ, nil, retAllow},
		{"recvmmsg", config.ModePasta, auditArch, unix.SYS_RECVMMSG, nil, retAllow},
		{"getppid not listed", config.ModePasst, auditArch, unix.SYS_GETPPID, nil, retKill},
		{"execve", config.ModePasta, auditArch, unix.SYS_EXECVE, nil, retKill},
		{"openat in passt", config.ModePasst, auditArch, unix.SYS_OPENAT, nil, retKill},
		{"mount", config.ModePasta, auditArch, unix.SYS_MOUNT, nil, retKill},
		{"setns not needed at run time", config.ModePasta, auditArch, unix.SYS_SETNS, nil, retKill},
		{"ptrace", config.ModePasta, auditArch, unix.SYS_PTRACE, nil, retKill},
		{"splice in pasta", config.ModePasta, auditArch, unix.SYS_SPLICE, nil, retAllow},
		{"splice in passt", config.ModePasst, auditArch, unix.SYS_SPLICE, nil, retKill},
		{"waitid in passt", config.ModePasst, auditArch, unix.SYS_WAITID, nil, retKill},
		{"i386 arch", config.ModePasst, unix.AUDIT_ARCH_I386, unix.SYS_READ, nil, retKill},
		{"aarch64 arch", config.ModePasta, unix.AUDIT_ARCH_AARCH64, 63, nil, retKill},
		{"x32 read", config.ModePasst, auditArch, x32SyscallBit | unix.SYS_READ, nil, retKill},
		{"clone thread", config.ModePasst, auditArch, unix.SYS_CLONE, []uint64{threadFlags}, retAllow},
		{"clone thread, high bits", config.ModePasta, auditArch, unix.SYS_CLONE, []uint64{1<<40 | threadFlags}, retAllow},
		{"clone process (fork)", config.ModePasst, auditArch, unix.SYS_CLONE, []uint64{uint64(unix.SIGCHLD)}, retKill},
		{"clone thread in new netns", config.ModePasta, auditArch, unix.SYS_CLONE, []uint64{threadFlags | unix.CLONE_NEWNET}, retKill},
		{"clone process in new userns", config.ModePasta, auditArch, unix.SYS_CLONE, []uint64{unix.CLONE_NEWUSER | uint64(unix.SIGCHLD)}, retKill},
		{"clone3 falls back", config.ModePasst, auditArch, unix.SYS_CLONE3, nil, enosys},
		{"rseq for glibc's threads", config.ModePasta, auditArch, unix.SYS_RSEQ, nil, retAllow},
		{"ioctl SIOCOUTQ", config.ModePasst, auditArch, unix.SYS_IOCTL, []uint64{5, unix.SIOCOUTQ}, retAllow},
		{"ioctl FIONREAD", config.ModePasta, auditArch, unix.SYS_IOCTL, []uint64{5, unix.SIOCINQ}, retAllow},
		{"ioctl TUNSETIFF", config.ModePasta, auditArch, unix.SYS_IOCTL, []uint64{5, unix.TUNSETIFF}, retKill},
		{"ioctl TIOCSTI", config.ModePasst, auditArch, unix.SYS_IOCTL, []uint64{0, unix.TIOCSTI}, retKill},
		{"socket AF_INET", config.ModePasta, auditArch, unix.SYS_SOCKET, []uint64{unix.AF_INET, unix.SOCK_DGRAM}, retAllow},
		{"socket AF_INET6", config.ModePasst, auditArch, unix.SYS_SOCKET, []uint64{unix.AF_INET6, unix.SOCK_STREAM}, retAllow},
		{"socket AF_NETLINK", config.ModePasta, auditArch, unix.SYS_SOCKET, []uint64{unix.AF_NETLINK, unix.SOCK_RAW}, retKill},
		{"socket AF_PACKET", config.ModePasst, auditArch, unix.SYS_SOCKET, []uint64{unix.AF_PACKET, unix.SOCK_RAW}, retKill},
		{"mmap rw", config.ModePasst, auditArch, unix.SYS_MMAP, []uint64{0, 4096, unix.PROT_READ | unix.PROT_WRITE}, retAllow},
		{"mmap exec", config.ModePasst, auditArch, unix.SYS_MMAP, []uint64{0, 4096, unix.PROT_READ | unix.PROT_EXEC}, retKill},
		{"mprotect none", config.ModePasta, auditArch, unix.SYS_MPROTECT, []uint64{0, 4096, unix.PROT_NONE}, retAllow},
		{"mprotect exec", config.ModePasta, auditArch, unix.SYS_MPROTECT, []uint64{0, 4096, unix.PROT_EXEC}, retKill},
	}
	vms := map[config.Mode]*bpf.VM{config.ModePasst: vm(t, config.ModePasst), config.ModePasta: vm(t, config.ModePasta)}
	for _, c := range cases {
		if got := run(t, vms[c.mode], c.arch, c.nr, c.args...); got != c.want {
			t.Errorf("%s (%s, nr %d): verdict %#x, want %#x", c.name, c.mode, c.nr, got, c.want)
		}
	}
}

// Every syscall number, in and out of the lists, gets the verdict the list
// says: the search tree loses none and lets none through.
func TestFilterExhaustive(t *testing.T) {
	for _, mode := range []config.Mode{config.ModePasst, config.ModePasta} {
		v := vm(t, mode)
		want := map[uint32]Verdict{}
		for _, vd := range Verdicts(mode) {
			want[vd.Nr] = vd
		}
		for nr := uint32(0); nr < 1024; nr++ {
			got := run(t, v, auditArch, nr)
			vd, listed := want[nr]
			switch {
			case !listed:
				if got != retKill {
					t.Errorf("%s: unlisted nr %d: %#x, want kill", mode, nr, got)
				}
			case vd.Errno != 0:
				if got != uint32(unix.SECCOMP_RET_ERRNO)|uint32(vd.Errno) {
					t.Errorf("%s: %s: %#x, want errno %d", mode, vd.Name, got, vd.Errno)
				}
			case len(vd.Checks) == 0:
				if got != retAllow {
					t.Errorf("%s: %s: %#x, want allow", mode, vd.Name, got)
				}
			default:
				// Arguments of zero: allowed exactly if a check
				// accepts zero.
				w := uint32(retKill)
				for _, c := range vd.Checks {
					if c.Value == 0 {
						w = retAllow
					}
				}
				if got != w {
					t.Errorf("%s: %s with zero arguments: %#x, want %#x", mode, vd.Name, got, w)
				}
			}
		}
	}
}

// The runtime's share is in both lists, and the lists stay within reach of
// the C original's (34 and 43 on x86_64) plus the runtime's.
func TestAllowListCounts(t *testing.T) {
	for _, mode := range []config.Mode{config.ModePasst, config.ModePasta} {
		allowed, rt, ours := Counts(mode)
		var b strings.Builder
		PrintSeccomp(&b, mode)
		t.Logf("\n%s", b.String())
		if rt == 0 || ours == 0 || allowed != rt+ours {
			t.Errorf("%s: counts %d = %d runtime + %d ours", mode, allowed, rt, ours)
		}
		for _, name := range []string{"futex", "clone", "exit_group", "rt_sigreturn", "epoll_pwait"} {
			if !strings.Contains(b.String(), "  "+name+" ") {
				t.Errorf("%s: %s missing from the printed list", mode, name)
			}
		}
		if allowed > cOriginalCount(mode)+20 {
			t.Errorf("%s: %d syscalls allowed: far beyond the C original's %d", mode, allowed, cOriginalCount(mode))
		}
	}
}

// Every registered name resolves on this architecture (register panics
// otherwise, so reaching here means the init functions ran clean), and
// every registration says why.
func TestRegistrationsExplained(t *testing.T) {
	for name, e := range registry {
		for _, r := range e.rules {
			if strings.TrimSpace(r.why) == "" {
				t.Errorf("%s registered at %s without a reason", name, r.where)
			}
		}
	}
}
