// --accel-sockmap: the splice path's in-kernel accelerator. Making its maps and
// loading its program take privileges in the initial user namespace
// (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON: pasta started as root), which the
// sandboxed process never has, so the invoked process probes and carries
// the three map descriptors across; the sandboxed process adopts them.

package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"gopasst/datapath/config"
	"gopasst/datapath/logging"
	"gopasst/datapath/sockmap"
	"gopasst/datapath/splice"
	"gopasst/isolation"
)

// sockmapCarried names the carried map descriptors, in sockmap.Accel.FDs
// order.
var sockmapCarried = [3]string{"sockmap-peers", "sockmap-sources", "sockmap-flows"}

// carrySockmap registers, in the invoked process, the probe of the
// accelerator and the carrying of its maps, and returns nil there; in the
// sandboxed process it adopts the carried maps and returns the
// accelerator. Without --accel-sockmap, with --no-splice, in passt mode, or when
// the probe fails (not root, a kernel without what it needs), it returns
// nil and the splice path works alone: said once with -d, never an error,
// as the probe is an optimisation.
//
// Returns the accelerator or nil, and an error only for a carry that
// isolation refuses.
func carrySockmap(cfg *config.Config) (splice.Accelerator, error) {
	if !cfg.Sockmap || cfg.Mode != config.ModePasta || cfg.NoSplice {
		return nil, nil
	}
	var probed *sockmap.Accel
	var files [3]*os.File
	for i, name := range sockmapCarried {
		f, err := isolation.Carry(name, func() (*os.File, error) {
			if i == 0 {
				// Unfiltered: this process installs no filter of
				// its own; the sandboxed one registers bpf when it
				// adopts.
				x, err := sockmap.Probe(sockmap.Options{Unfiltered: true})
				if err != nil {
					logging.Debugf("TCP splice: no sockmap accelerator: %v", err)
					return nil, nil
				}
				probed = x
			}
			if probed == nil {
				return nil, nil
			}
			fd, err := unix.FcntlInt(uintptr(probed.FDs()[i]), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				return nil, fmt.Errorf("sockmap: %w", err)
			}
			return os.NewFile(uintptr(fd), name), nil
		})
		if err != nil {
			return nil, err
		}
		files[i] = f
	}
	if files[0] == nil || files[1] == nil || files[2] == nil {
		// The invoked process, or a probe that failed.
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
		return nil, nil
	}
	// The maps take raw descriptors: duplicates, since an *os.File's
	// finalizer would close its own (and the number would come back as a
	// socket the maps were then confused with).
	var fds [3]int
	for i, f := range files {
		fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("sockmap: %w", err)
		}
		fds[i] = fd
	}
	x, err := sockmap.Adopt(fds)
	if err != nil {
		logging.Debugf("TCP splice: no sockmap accelerator: %v", err)
		return nil, nil
	}
	logging.Debugf("TCP splice: sockmap accelerator on (%d pairs)", x.Capacity())
	return x, nil
}
