//go:build cgo

// Package threadcaps narrows the capability sets of every thread of the
// process, not only the calling one. Linux keeps capabilities (effective,
// permitted, inheritable, bounding, ambient) per thread, capset() and
// prctl() act on the caller alone, and a Go program has threads it does
// not control: the runtime's (sysmon, the template thread, idle Ms), which
// keep whatever they had when they were created. Threads created later
// copy their creator, so once every existing thread is narrowed, the whole
// process is, for good.
//
// With cgo, syscall.AllThreadsSyscall is unavailable (the runtime cannot
// know the C library's threads); glibc broadcasts setuid() and friends to
// every thread itself, but not capset(). So this package does what glibc
// does for setuid, as libcap's psx does: a C handler for a real-time
// signal the runtime does not use narrows the thread it runs on with raw
// system calls (async-signal-safe), and NarrowAll sends that signal to
// each thread listed in /proc/self/task until every one of them shows the
// narrowed sets there. The runtime's own handler for the signal is put
// back afterwards (it ignores real-time signals nobody asked os/signal
// for, should one arrive late). os/signal's thread, which blocks every
// signal nobody asked it for, is made to unblock ours for the while with
// signal.Notify.
//
// Builds without cgo use syscall.AllThreadsSyscall instead (nocgo.go).
package threadcaps

/*
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <linux/capability.h>

#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

static uint64_t gopasst_tc_keep;   // what each thread keeps
static int gopasst_tc_done;        // handler runs, atomically counted
static int gopasst_tc_err;         // first errno a handler met, 0 if none
static struct sigaction gopasst_tc_old;

// gopasst_tc_narrow_self() - Narrow the calling thread's capabilities to
// @keep: empty ambient and inheritable sets, bounding set cut to @keep
// (while CAP_SETPCAP is still there: before capset), effective and
// permitted sets cut to @keep. Raw system calls only: it runs in a signal
// handler. Return: 0, or negative errno.
static int gopasst_tc_narrow_self(uint64_t keep)
{
	struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct data[2];
	int c, i;

	if (syscall(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) &&
	    errno != EINVAL)
		return -errno;
	for (c = 0; c < 64; c++) {
		if (keep & (1ULL << c))
			continue;
		if (!syscall(SYS_prctl, PR_CAPBSET_DROP, c, 0, 0, 0) || errno == EINVAL)
			continue;
		// Without CAP_SETPCAP (checked before the number is): fine if
		// it is not in the set anyway, or no capability of the kernel.
		if (errno == EPERM) {
			long in = syscall(SYS_prctl, PR_CAPBSET_READ, c, 0, 0, 0);

			if (!in || (in < 0 && errno == EINVAL))
				continue;
			errno = EPERM;
		}
		return -errno;
	}
	if (syscall(SYS_capget, &hdr, data))
		return -errno;
	for (i = 0; i < 2; i++) {
		data[i].effective &= (uint32_t)(keep >> (32 * i));
		data[i].permitted &= (uint32_t)(keep >> (32 * i));
		data[i].inheritable = 0;
	}
	if (syscall(SYS_capset, &hdr, data))
		return -errno;
	return 0;
}

// gopasst_tc_handler() - Signal handler: narrow this thread, count it.
static void gopasst_tc_handler(int sig, siginfo_t *si, void *uc)
{
	int saved = errno, r, zero = 0;

	(void)sig;
	(void)si;
	(void)uc;
	r = gopasst_tc_narrow_self(__atomic_load_n(&gopasst_tc_keep, __ATOMIC_SEQ_CST));
	if (r < 0)
		__atomic_compare_exchange_n(&gopasst_tc_err, &zero, -r, 0,
					    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
	__atomic_add_fetch(&gopasst_tc_done, 1, __ATOMIC_SEQ_CST);
	errno = saved;
}

// gopasst_tc_signal() - The real-time signal used: neither glibc's
// (32, 33) nor one Go's runtime uses with cgo.
static int gopasst_tc_signal(void)
{
	return SIGRTMIN + 3;
}

// gopasst_tc_install() - Install the handler for @keep, saving the old
// one. On the alternate signal stack: Go's threads run on small stacks.
// Return: 0, or negative errno.
static int gopasst_tc_install(uint64_t keep)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = gopasst_tc_handler;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
	sigfillset(&sa.sa_mask);
	__atomic_store_n(&gopasst_tc_keep, keep, __ATOMIC_SEQ_CST);
	__atomic_store_n(&gopasst_tc_done, 0, __ATOMIC_SEQ_CST);
	__atomic_store_n(&gopasst_tc_err, 0, __ATOMIC_SEQ_CST);
	if (sigaction(gopasst_tc_signal(), &sa, &gopasst_tc_old))
		return -errno;
	return 0;
}

// gopasst_tc_restore() - Put back the handler saved by install.
static int gopasst_tc_restore(void)
{
	if (sigaction(gopasst_tc_signal(), &gopasst_tc_old, NULL))
		return -errno;
	return 0;
}

static int gopasst_tc_done_count(void)
{
	return __atomic_load_n(&gopasst_tc_done, __ATOMIC_SEQ_CST);
}

static int gopasst_tc_error(void)
{
	return __atomic_load_n(&gopasst_tc_err, __ATOMIC_SEQ_CST);
}
*/
import "C"

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Bounds of NarrowAll's rounds: each lists the threads, signals those not
// narrowed yet and waits for their handlers; a thread created meanwhile by
// one not yet narrowed shows up in the next round.
const (
	maxRounds    = 20
	roundTimeout = 100 * time.Millisecond
)

// NarrowAll narrows every thread of the process to keep (bit n for
// capability n): empty ambient and inheritable sets, bounding, effective
// and permitted sets cut to keep. taskDir is a descriptor of
// /proc/self/task, opened before the filesystem went away (Prefork runs
// after pivot_root into an empty root). It must be called before seccomp
// (capset, prctl and rt_sigaction are not allowed after). It returns an
// error naming the thread that could not be narrowed, or the failed step.
func NarrowAll(taskDir int, keep uint64) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if r := C.gopasst_tc_narrow_self(C.uint64_t(keep)); r < 0 {
		return fmt.Errorf("narrowing this thread's capabilities: %w", syscall.Errno(-r))
	}
	sig := broadcastSignal()
	// os/signal's own thread (started by any signal.Notify, as
	// datapath/term's) keeps every signal nobody asked for blocked, for
	// good: asking for ours unblocks it there too. The runtime's handler,
	// which Notify leaves in place, is then replaced by ours until done.
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sig)
	defer signal.Stop(ch)
	if r := C.gopasst_tc_install(C.uint64_t(keep)); r < 0 {
		return fmt.Errorf("installing the capability signal handler: %w", syscall.Errno(-r))
	}
	defer C.gopasst_tc_restore()
	pid, self := unix.Getpid(), unix.Gettid()
	sent := 0
	var last error
	for round := 0; round < maxRounds; round++ {
		if e := C.gopasst_tc_error(); e != 0 {
			return fmt.Errorf("narrowing capabilities in a thread: %w", syscall.Errno(e))
		}
		tids, err := listTasks(taskDir)
		if err != nil {
			return err
		}
		pending := 0
		for _, tid := range tids {
			st, err := readStatus(taskDir, tid)
			if err != nil || st.nsTID == self || st.narrowed(keep) {
				continue // gone, this thread, or done
			}
			last = fmt.Errorf("thread %d still holds capabilities outside %#x", tid, keep)
			// Signal it once per round: real-time signals queue, and
			// one still pending will be handled anyway.
			if err := unix.Tgkill(pid, st.nsTID, sig); err != nil && err != unix.ESRCH {
				return fmt.Errorf("signalling thread %d: %w", tid, err)
			}
			sent++
			pending++
		}
		if pending == 0 {
			if e := C.gopasst_tc_error(); e != 0 {
				return fmt.Errorf("narrowing capabilities in a thread: %w", syscall.Errno(e))
			}
			return nil
		}
		deadline := time.Now().Add(roundTimeout)
		for int(C.gopasst_tc_done_count()) < sent && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	return fmt.Errorf("narrowing every thread's capabilities: %w", last)
}

// broadcastSignal returns the real-time signal NarrowAll sends.
func broadcastSignal() unix.Signal { return unix.Signal(C.gopasst_tc_signal()) }
