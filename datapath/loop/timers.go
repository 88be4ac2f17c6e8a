package loop

// Timers is a fixed-capacity min-heap of deadlines, one slot per id (a flow
// index), each with the callback registered for its class. Setting,
// moving and cancelling a timer are O(log n) and allocate nothing, unlike
// one timerfd per flow (a descriptor and a system call each time) or Go's
// runtime timers (which would run on other goroutines).
type Timers struct {
	heap []int32 // ids ordered by deadline
	// pos: id -> index in heap + 1, 0 if not armed. Zero means "not
	// armed" so that the capacity's arrays need no initialising pass and
	// their pages stay untouched until a flow of that index uses a timer.
	pos  []int32
	when []int64
	cb   []func(id int32, now int64)
}

func (t *Timers) init(capacity int) {
	t.heap = make([]int32, 0, capacity)
	t.pos = make([]int32, capacity)
	t.when = make([]int64, capacity)
	t.cb = make([]func(int32, int64), capacity)
}

// Set arms (or moves) timer id to fire fn at the absolute loop time when.
func (t *Timers) Set(id int32, when int64, fn func(id int32, now int64)) {
	t.when[id] = when
	t.cb[id] = fn
	if p := t.pos[id]; p > 0 {
		t.fix(int(p - 1))
		return
	}
	t.heap = append(t.heap, id)
	t.pos[id] = int32(len(t.heap))
	t.up(len(t.heap) - 1)
}

// Armed reports whether timer id is armed, and its deadline.
func (t *Timers) Armed(id int32) (int64, bool) {
	if t.pos[id] == 0 {
		return 0, false
	}
	return t.when[id], true
}

// Cancel disarms timer id (no-op if not armed).
func (t *Timers) Cancel(id int32) {
	p := int(t.pos[id]) - 1
	if p < 0 {
		return
	}
	last := len(t.heap) - 1
	t.swap(p, last)
	t.heap = t.heap[:last]
	t.pos[id] = 0
	if p < last {
		t.fix(p)
	}
}

func (t *Timers) earliest() (int64, bool) {
	if len(t.heap) == 0 {
		return 0, false
	}
	return t.when[t.heap[0]], true
}

// fire runs every timer due at now. A callback may re-arm its own timer.
func (t *Timers) fire(now int64) {
	for len(t.heap) > 0 {
		id := t.heap[0]
		if t.when[id] > now {
			return
		}
		t.Cancel(id)
		t.cb[id](id, now)
	}
}

func (t *Timers) less(i, j int) bool { return t.when[t.heap[i]] < t.when[t.heap[j]] }

func (t *Timers) swap(i, j int) {
	t.heap[i], t.heap[j] = t.heap[j], t.heap[i]
	t.pos[t.heap[i]] = int32(i) + 1
	t.pos[t.heap[j]] = int32(j) + 1
}

func (t *Timers) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !t.less(i, p) {
			return
		}
		t.swap(i, p)
		i = p
	}
}

func (t *Timers) down(i int) {
	n := len(t.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && t.less(r, l) {
			m = r
		}
		if !t.less(m, i) {
			return
		}
		t.swap(i, m)
		i = m
	}
}

func (t *Timers) fix(i int) {
	t.up(i)
	t.down(i)
}
