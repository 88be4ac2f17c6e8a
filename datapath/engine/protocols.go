package engine

import (
	"fmt"

	"gopasst/datapath/icmp"
	"gopasst/datapath/tcp"
	"gopasst/datapath/udp"
)

// wireProtocols creates the TCP, UDP and ICMP handlers, connects them to the
// demultiplexer and opens the listeners of the forwarding rules
// (wireForwarding): all of this before the sandbox, since listeners below
// ip_unprivileged_port_start need the privileges we have only then.
func (e *Engine) wireProtocols(o Options) error {
	cfg := e.Cfg
	if !cfg.NoTCP {
		h, err := tcp.New(cfg, &e.Guest, e.Tap, e.Loop, e.Flows)
		if err != nil {
			return fmt.Errorf("tcp: %w", err)
		}
		if ps, ok := e.Tap.(tcp.PayloadSource); ok {
			h.Payload = ps
		}
		e.TCP = h
		e.Demux.TCP = h
	}
	if !cfg.NoUDP {
		h, err := udp.New(cfg, &e.Guest, e.Tap, e.Loop, e.Flows)
		if err != nil {
			return fmt.Errorf("udp: %w", err)
		}
		e.UDP = h
		e.Demux.UDP = h
	}
	if err := e.wireForwarding(o); err != nil {
		return err
	}
	if !cfg.NoICMP {
		h, err := icmp.New(cfg, &e.Guest, e.Tap, e.Loop, e.Flows, o.ICMP)
		if err != nil {
			return fmt.Errorf("icmp: %w", err)
		}
		e.ICMP = h
		e.Demux.ICMP = h
	}
	return nil
}
