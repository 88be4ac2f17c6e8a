package engine

import (
	"fmt"

	"gopasst/datapath/icmp"
	"gopasst/datapath/tcp"
	"gopasst/datapath/udp"
)

// wireProtocols creates the TCP, UDP and ICMP handlers, connects them to the
// demultiplexer and opens the listeners of the forwarding rules: all of
// this before the sandbox, which forbids binding new listeners later only
// in the sense that their addresses and ports are known now.
func (e *Engine) wireProtocols(o Options) error {
	cfg := e.Cfg
	if !cfg.NoTCP {
		h, err := tcp.New(cfg, &e.Guest, e.Tap, e.Loop, e.Flows)
		if err != nil {
			return fmt.Errorf("tcp: %w", err)
		}
		e.TCP = h
		e.Demux.TCP = h
		if err := h.Listen(&cfg.TCPIn); err != nil {
			return err
		}
	}
	if !cfg.NoUDP {
		h, err := udp.New(cfg, &e.Guest, e.Tap, e.Loop, e.Flows)
		if err != nil {
			return fmt.Errorf("udp: %w", err)
		}
		e.UDP = h
		e.Demux.UDP = h
		if err := h.Listen(&cfg.UDPIn); err != nil {
			return err
		}
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
