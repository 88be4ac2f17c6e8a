// Port forwarding: the listeners of every rule, on the host (-t/-u) and in
// pasta's namespace (-T/-U), and the port scan that makes "auto" rules
// follow the servers bound on the other side.

package engine

import (
	"fmt"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/datapath/fwd"
	"gopasst/datapath/logging"
	"gopasst/datapath/procnet"
	"gopasst/datapath/splice"
)

// scanEvery is how often "auto" rules rescan the other side, as the C
// original's (at least a second between scans).
const scanEvery = time.Second

// portScan is the state of the automatic forwarding: the kept /proc/net
// tables of each side and the port sets of the last scan.
type portScan struct {
	host, ns               *procnet.Tables // nil: that side is not scanned
	hostTCP, hostUDP       procnet.Ports
	nsTCP, nsUDP           procnet.Ports
	mine, want, wantFollow procnet.Ports
	failed                 bool // a scan error was logged
}

// wireForwarding opens the listeners of the fixed rules and, if any rule is
// "auto", the tables of the side it watches, scans once and rescans every
// second. It runs before the sandbox: the host's tables (/proc/self/net)
// are opened here, the namespace's on its worker thread
// (/proc/thread-self/net), and both are only re-read afterwards.
//
// Listeners draw from one descriptor budget (fwd.Budget) under the
// process's limit, raised to the hard limit at start-up (isolation.Initial),
// so that forwarding many ports leaves room for the connections to them.
func (e *Engine) wireForwarding(o Options) error {
	cfg := e.Cfg
	var lim unix.Rlimit
	nofile := 1 << 20
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil {
		nofile = int(min(lim.Cur, 1<<20))
	}
	pasta := o.NSDo != nil
	if e.TCP != nil && pasta {
		// The loopback path is made whatever -t says: -T connections
		// and "auto" ones found later need it too, and with
		// --no-splice -T still has no other way. A spliced
		// connection holds six descriptors (two sockets, two pipes).
		// Pools scaled to the limit too: at the defaults (32 sockets
		// per family and side, 32 pipe pairs) they hold 256
		// descriptors, all of a 256-descriptor limit.
		pool := min(max(nofile/256, 2), 32)
		sp, err := splice.New(e.Loop, splice.Options{NSDo: o.NSDo, MaxConns: max(nofile/8, 64), PoolSize: pool, Pipes: pool, Accel: o.SpliceAccel})
		if err != nil {
			return fmt.Errorf("TCP splice: %w", err)
		}
		e.Splice = sp
		e.TCP.Splice = splicer{sp}
		logging.Debugf("TCP splice: loopback connections through pipes of %d bytes", sp.PipeSize())
	}
	// Listeners may take what is left under the limit now (the tap, the
	// loop, the pools and the ICMP sockets are open), less the part
	// NewBudget keeps for flows.
	budget := fwd.NewBudget(nofile - openFDs())
	if e.TCP != nil {
		e.TCP.NSDo, e.TCP.Budget = o.NSDo, budget
		if err := e.TCP.Listen(&cfg.TCPIn, false); err != nil {
			return err
		}
		if pasta {
			if err := e.TCP.Listen(&cfg.TCPOut, true); err != nil {
				return err
			}
		}
	}
	if e.UDP != nil {
		e.UDP.NSDo, e.UDP.Budget = o.NSDo, budget
		if err := e.UDP.Listen(&cfg.UDPIn, false); err != nil {
			return err
		}
		if pasta {
			if err := e.UDP.Listen(&cfg.UDPOut, true); err != nil {
				return err
			}
		}
	}
	inbound := (e.TCP != nil && cfg.TCPIn.Scanning()) || (e.UDP != nil && cfg.UDPIn.Scanning())
	outbound := pasta && ((e.TCP != nil && cfg.TCPOut.Scanning()) || (e.UDP != nil && cfg.UDPOut.Scanning()))
	if !inbound && !outbound {
		return nil
	}
	s := &portScan{}
	if inbound {
		if !pasta {
			return fmt.Errorf("automatic forwarding needs pasta's namespace")
		}
		err := o.NSDo(func() error {
			var err error
			s.ns, err = procnet.Open("/proc/thread-self/net")
			return err
		})
		if err != nil {
			return err
		}
	}
	if outbound {
		var err error
		if s.host, err = procnet.Open("/proc/self/net"); err != nil {
			return err
		}
	}
	e.scan = s
	e.rescan(0)
	e.Loop.Every(scanEvery, e.rescan)
	return nil
}

// rescan reads the watched tables and makes the listeners of every "auto"
// rule follow them: -t/-u the namespace's bound ports, -T/-U the host's.
// The ports we listen on ourselves on the scanned side are taken out
// first (the C original's rule), or a -t listener would make a -T one for
// its own port, and so on. With UDP following TCP (-u auto), UDP also
// takes the TCP ports found.
func (e *Engine) rescan(int64) {
	s, cfg := e.scan, e.Cfg
	if s.ns != nil {
		if err := s.ns.Scan(&s.nsTCP, &s.nsUDP); err != nil {
			s.warn(err)
			return
		}
	}
	if s.host != nil {
		if err := s.host.Scan(&s.hostTCP, &s.hostUDP); err != nil {
			s.warn(err)
			return
		}
	}
	// follow computes, into s.want, the ports of set (and of tcpSet if
	// not nil) bound on the scanned side (ns) by others than us.
	follow := func(ns bool, set, tcpSet *procnet.Ports) *procnet.Ports {
		s.want = *set
		s.mine.Clear()
		if e.UDP != nil {
			e.UDP.Listening(ns, &s.mine)
		}
		s.want.Subtract(&s.mine)
		if tcpSet != nil {
			s.wantFollow = *tcpSet
			s.mine.Clear()
			if e.TCP != nil {
				e.TCP.Listening(ns, &s.mine)
			}
			s.wantFollow.Subtract(&s.mine)
			s.want.Union(&s.wantFollow)
		}
		return &s.want
	}
	followTCP := func(ns bool, set *procnet.Ports) *procnet.Ports {
		s.want = *set
		s.mine.Clear()
		e.TCP.Listening(ns, &s.mine)
		s.want.Subtract(&s.mine)
		return &s.want
	}
	if s.ns != nil {
		if e.TCP != nil && cfg.TCPIn.Scanning() {
			e.TCP.SyncScan(&cfg.TCPIn, false, followTCP(true, &s.nsTCP))
		}
		if e.UDP != nil && cfg.UDPIn.Scanning() {
			var tcp *procnet.Ports
			if cfg.UDPIn.ScanFollowsTCP {
				tcp = &s.nsTCP
			}
			e.UDP.SyncScan(&cfg.UDPIn, false, follow(true, &s.nsUDP, tcp))
		}
	}
	if s.host != nil {
		if e.TCP != nil && cfg.TCPOut.Scanning() {
			e.TCP.SyncScan(&cfg.TCPOut, true, followTCP(false, &s.hostTCP))
		}
		if e.UDP != nil && cfg.UDPOut.Scanning() {
			var tcp *procnet.Ports
			if cfg.UDPOut.ScanFollowsTCP {
				tcp = &s.hostTCP
			}
			e.UDP.SyncScan(&cfg.UDPOut, true, follow(false, &s.hostUDP, tcp))
		}
	}
}

// warn logs a scan failure once; the scan is tried again every second.
func (s *portScan) warn(err error) {
	if !s.failed {
		s.failed = true
		logging.Warnf("automatic forwarding: %v", err)
	}
}

// splicer adapts the splice engine to what the TCP listeners call
// (tcp.Splicer): toNS says the connection is made in the namespace.
type splicer struct{ h *splice.Handler }

// Connect implements tcp.Splicer.
func (s splicer) Connect(fd int, toNS bool, dst netip.AddrPort) error {
	side := splice.Host
	if toNS {
		side = splice.NS
	}
	return s.h.Connect(fd, side, dst)
}

// openFDs returns how many descriptors the process has open (0 if
// /proc/self/fd cannot be read). Called before the sandbox only.
func openFDs() int {
	d, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	return len(d)
}
