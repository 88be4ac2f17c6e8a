// The filter program, run in golang.org/x/net/bpf's interpreter.

package isolation

import (
	"encoding/binary"
	"strings"
	"testing"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"gopasst/isolation/allow"
)

// vm assembles mode's filter into an interpreter.
func vm(t *testing.T, mode allow.Mode) *bpf.VM {
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
		mode allow.Mode
		arch uint32
		nr   uint32
		args []uint64
		want uint32
	}{
		{"read", allow.Passt, allow.AuditArch, unix.SYS_READ, nil, retAllow},
		{"recvmmsg", allow.Pasta, allow.AuditArch, unix.SYS_RECVMMSG, nil, retAllow},
		{"getppid not listed", allow.Passt, allow.AuditArch, unix.SYS_GETPPID, nil, retKill},
		{"execve", allow.Pasta, allow.AuditArch, unix.SYS_EXECVE, nil, retKill},
		{"openat in passt", allow.Passt, allow.AuditArch, unix.SYS_OPENAT, nil, retKill},
		{"mount", allow.Pasta, allow.AuditArch, unix.SYS_MOUNT, nil, retKill},
		{"setns not needed at run time", allow.Pasta, allow.AuditArch, unix.SYS_SETNS, nil, retKill},
		{"ptrace", allow.Pasta, allow.AuditArch, unix.SYS_PTRACE, nil, retKill},
		{"splice in pasta", allow.Pasta, allow.AuditArch, unix.SYS_SPLICE, nil, retAllow},
		{"splice in passt", allow.Passt, allow.AuditArch, unix.SYS_SPLICE, nil, retKill},
		{"waitid in passt", allow.Passt, allow.AuditArch, unix.SYS_WAITID, nil, retKill},
		{"i386 arch", allow.Passt, unix.AUDIT_ARCH_I386, unix.SYS_READ, nil, retKill},
		{"aarch64 arch", allow.Pasta, unix.AUDIT_ARCH_AARCH64, 63, nil, retKill},
		{"x32 read", allow.Passt, allow.AuditArch, x32SyscallBit | unix.SYS_READ, nil, retKill},
		{"clone thread", allow.Passt, allow.AuditArch, unix.SYS_CLONE, []uint64{threadFlags}, retAllow},
		{"clone thread, high bits", allow.Pasta, allow.AuditArch, unix.SYS_CLONE, []uint64{1<<40 | threadFlags}, retAllow},
		{"clone process (fork)", allow.Passt, allow.AuditArch, unix.SYS_CLONE, []uint64{uint64(unix.SIGCHLD)}, retKill},
		{"clone thread in new netns", allow.Pasta, allow.AuditArch, unix.SYS_CLONE, []uint64{threadFlags | unix.CLONE_NEWNET}, retKill},
		{"clone process in new userns", allow.Pasta, allow.AuditArch, unix.SYS_CLONE, []uint64{unix.CLONE_NEWUSER | uint64(unix.SIGCHLD)}, retKill},
		{"clone3 falls back", allow.Passt, allow.AuditArch, unix.SYS_CLONE3, nil, enosys},
		{"rseq for glibc's threads", allow.Pasta, allow.AuditArch, unix.SYS_RSEQ, nil, retAllow},
		{"ioctl SIOCOUTQ", allow.Passt, allow.AuditArch, unix.SYS_IOCTL, []uint64{5, unix.SIOCOUTQ}, retAllow},
		{"ioctl FIONREAD", allow.Pasta, allow.AuditArch, unix.SYS_IOCTL, []uint64{5, unix.SIOCINQ}, retAllow},
		{"ioctl TUNSETIFF", allow.Pasta, allow.AuditArch, unix.SYS_IOCTL, []uint64{5, unix.TUNSETIFF}, retKill},
		{"ioctl TIOCSTI", allow.Passt, allow.AuditArch, unix.SYS_IOCTL, []uint64{0, unix.TIOCSTI}, retKill},
		{"socket AF_INET", allow.Pasta, allow.AuditArch, unix.SYS_SOCKET, []uint64{unix.AF_INET, unix.SOCK_DGRAM}, retAllow},
		{"socket AF_INET6", allow.Passt, allow.AuditArch, unix.SYS_SOCKET, []uint64{unix.AF_INET6, unix.SOCK_STREAM}, retAllow},
		{"socket AF_NETLINK", allow.Pasta, allow.AuditArch, unix.SYS_SOCKET, []uint64{unix.AF_NETLINK, unix.SOCK_RAW}, retKill},
		{"socket AF_PACKET", allow.Passt, allow.AuditArch, unix.SYS_SOCKET, []uint64{unix.AF_PACKET, unix.SOCK_RAW}, retKill},
		{"mmap rw", allow.Passt, allow.AuditArch, unix.SYS_MMAP, []uint64{0, 4096, unix.PROT_READ | unix.PROT_WRITE}, retAllow},
		{"mmap exec", allow.Passt, allow.AuditArch, unix.SYS_MMAP, []uint64{0, 4096, unix.PROT_READ | unix.PROT_EXEC}, retKill},
		{"mprotect none", allow.Pasta, allow.AuditArch, unix.SYS_MPROTECT, []uint64{0, 4096, unix.PROT_NONE}, retAllow},
		{"mprotect exec", allow.Pasta, allow.AuditArch, unix.SYS_MPROTECT, []uint64{0, 4096, unix.PROT_EXEC}, retKill},
	}
	vms := map[allow.Mode]*bpf.VM{allow.Passt: vm(t, allow.Passt), allow.Pasta: vm(t, allow.Pasta)}
	for _, c := range cases {
		if got := run(t, vms[c.mode], c.arch, c.nr, c.args...); got != c.want {
			t.Errorf("%s (%s, nr %d): verdict %#x, want %#x", c.name, c.mode, c.nr, got, c.want)
		}
	}
}

// Every syscall number, in and out of the lists, gets the verdict the list
// says: the search tree loses none and lets none through.
func TestFilterExhaustive(t *testing.T) {
	for _, mode := range []allow.Mode{allow.Passt, allow.Pasta} {
		v := vm(t, mode)
		want := map[uint32]allow.Verdict{}
		for _, vd := range allow.Verdicts(mode) {
			want[vd.Nr] = vd
		}
		for nr := uint32(0); nr < 1024; nr++ {
			got := run(t, v, allow.AuditArch, nr)
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
	for _, mode := range []allow.Mode{allow.Passt, allow.Pasta} {
		allowed, rt, ours := allow.Counts(mode)
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
	for _, r := range allow.Registrations() {
		if strings.TrimSpace(r.Why) == "" {
			t.Errorf("%s registered at %s without a reason", r.Name, r.Where)
		}
	}
}
