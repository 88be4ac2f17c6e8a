package batch

// Frames is a fixed pool of frame buffers used as a queue: a producer takes
// the next free buffer, fills it and commits its length; a consumer writes
// all committed frames and resets the queue. Each buffer has Headroom bytes
// before the frame for a back end's own header (the qemu stream socket's
// 4-byte length, a virtio-net header), so the frame never moves.
type Frames struct {
	mem      []byte
	size     int // bytes per slot, headroom included
	headroom int
	lens     []int
	n        int // committed frames
}

// NewFrames allocates count slots for frames of up to frameSize bytes, each
// preceded by headroom bytes. Slots are aligned to 64 bytes.
func NewFrames(count, frameSize, headroom int) *Frames {
	size := (frameSize + headroom + 63) &^ 63
	return &Frames{
		mem:      make([]byte, count*size),
		size:     size,
		headroom: headroom,
		lens:     make([]int, count),
	}
}

// Cap returns the number of slots.
func (f *Frames) Cap() int { return len(f.lens) }

// Len returns the number of committed frames.
func (f *Frames) Len() int { return f.n }

// Full reports whether every slot holds a committed frame.
func (f *Frames) Full() bool { return f.n == len(f.lens) }

// Next returns the buffer of the next free slot (len == cap == the largest
// frame), or nil when the pool is full.
func (f *Frames) Next() []byte {
	if f.n == len(f.lens) {
		return nil
	}
	off := f.n*f.size + f.headroom
	return f.mem[off : off+f.size-f.headroom : off+f.size-f.headroom]
}

// Slot returns the full buffer of slot i, for producers that fill several
// slots before committing them (a TCP read straight into many frames).
func (f *Frames) Slot(i int) []byte {
	off := i*f.size + f.headroom
	return f.mem[off : off+f.size-f.headroom : off+f.size-f.headroom]
}

// Commit records that the next free slot holds a frame of n bytes.
func (f *Frames) Commit(n int) {
	f.lens[f.n] = n
	f.n++
}

// Frame returns committed frame i.
func (f *Frames) Frame(i int) []byte {
	off := i*f.size + f.headroom
	return f.mem[off : off+f.lens[i]]
}

// WithHeadroom returns committed frame i preceded by its headroom.
func (f *Frames) WithHeadroom(i int) []byte {
	off := i * f.size
	return f.mem[off : off+f.headroom+f.lens[i]]
}

// Headroom returns the headroom of slot i (committed or not), where a back
// end writes its own header for the frame in that slot.
func (f *Frames) Headroom(i int) []byte {
	off := i * f.size
	return f.mem[off : off+f.headroom : off+f.headroom]
}

// Reset empties the queue.
func (f *Frames) Reset() { f.n = 0 }
