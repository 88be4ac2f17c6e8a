package engine

// wire connects the local services and the protocols to the demultiplexer
// and the loop.
func (e *Engine) wire() error {
	return nil
}
