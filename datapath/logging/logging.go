// Package logging is gopasst's logger: quiet by default like the C original,
// more with -d/--debug and --trace, errors only with -q. Lines go to stderr
// while in the foreground, and to the -l log file (rotated in place when it
// grows past --log-size) when one is given.
//
// The hot path never formats a log line unless its level is enabled: callers
// test Debugging()/Tracing() before building arguments that would allocate.
package logging

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Level orders how much is logged.
type Level int32

const (
	Error Level = iota
	Warn
	Info
	Debug
	Trace
)

var (
	level  atomic.Int32 // current Level
	mu     sync.Mutex
	out    io.Writer = os.Stderr
	file   *os.File
	limit  int64
	start  = time.Now()
	prefix = "gopasst"
)

func init() { level.Store(int32(Warn)) }

// SetLevel sets the most verbose level that is printed.
func SetLevel(l Level) { level.Store(int32(l)) }

// SetPrefix sets the program name printed before each line ("passt"/"pasta").
func SetPrefix(p string) { prefix = p }

// Enabled reports whether lines at level l are printed.
func Enabled(l Level) bool { return Level(level.Load()) >= l }

// Debugging reports whether -d or --trace is in effect.
func Debugging() bool { return Enabled(Debug) }

// Tracing reports whether --trace is in effect.
func Tracing() bool { return Enabled(Trace) }

// SetFile sends log lines to f (opened by the caller before sandboxing),
// truncating it back to empty whenever it would grow past size bytes
// (0: no limit). Lines still go to stderr unless quietStderr is set, as
// they do once daemonised.
func SetFile(f *os.File, size int64, quietStderr bool) {
	mu.Lock()
	defer mu.Unlock()
	file, limit = f, size
	if quietStderr {
		out = io.Discard
	}
}

// Detach stops writing to stderr: called once the process daemonises.
func Detach() {
	mu.Lock()
	out = io.Discard
	mu.Unlock()
}

func emit(l Level, format string, args ...any) {
	if !Enabled(l) {
		return
	}
	msg := fmt.Sprintf(format, args...)
	mu.Lock()
	defer mu.Unlock()
	if Enabled(Debug) {
		// With debugging, lines carry the time since start as the C
		// original's do, which makes event ordering readable.
		d := time.Since(start)
		fmt.Fprintf(out, "%d.%04d: %s\n", int64(d/time.Second), int64(d%time.Second/(100*time.Microsecond)), msg)
	} else {
		fmt.Fprintf(out, "%s\n", msg)
	}
	if file != nil {
		if limit > 0 {
			if st, err := file.Stat(); err == nil && st.Size()+int64(len(msg))+1 > limit {
				file.Truncate(0)
				file.Seek(0, io.SeekStart)
			}
		}
		fmt.Fprintf(file, "%s %s: %s\n", time.Now().Format(time.RFC3339), prefix, msg)
	}
}

// Errorf logs an error line.
func Errorf(format string, args ...any) { emit(Error, format, args...) }

// Warnf logs a warning line.
func Warnf(format string, args ...any) { emit(Warn, format, args...) }

// Infof logs an informational line (shown unless -q).
func Infof(format string, args ...any) { emit(Info, format, args...) }

// Debugf logs a line shown with -d or --trace.
func Debugf(format string, args ...any) { emit(Debug, format, args...) }

// Tracef logs a line shown only with --trace.
func Tracef(format string, args ...any) { emit(Trace, format, args...) }

// Fatalf logs one error line and exits with status 1: the behaviour for a
// misconfiguration or a failed start-up step.
func Fatalf(format string, args ...any) {
	emit(Error, format, args...)
	os.Exit(1)
}
