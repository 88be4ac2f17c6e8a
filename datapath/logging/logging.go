// Package logging is gopasst's logger: quiet by default like the C original,
// more with -d/--debug and --trace, warnings and errors only with -q. Lines
// go to stderr while in the foreground; to the -l log file (emptied in place
// when it would grow past --log-size) when one is given; and, once the
// process is in the background without a log file, to the system log
// (/dev/log, facility daemon), as the C original does.
//
// It is also the handler behind the standard library's log/slog default
// logger (Install), so that code which must not import the datapath (the
// isolation stages) logs through slog and its lines come out here, in the
// same format and at the same levels.
//
// The hot path never formats a log line unless its level is enabled: callers
// test Debugging()/Tracing() before building arguments that would allocate.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"gopasst/isolation/allow"
)

// Level orders how much is logged; the values are log/slog's, with Trace
// below Debug.
type Level = slog.Level

const (
	Error Level = slog.LevelError
	Warn  Level = slog.LevelWarn
	Info  Level = slog.LevelInfo
	Debug Level = slog.LevelDebug
	Trace Level = slog.LevelDebug - 4
)

var (
	level  atomic.Int64 // the lowest Level printed
	mu     sync.Mutex
	out    io.Writer = os.Stderr
	file   *os.File
	limit  int64 // --log-size, 0 for none
	size   int64 // bytes written to file since it was last emptied
	syslog int   // connected /dev/log socket once detached, -1 if none
	start  = time.Now()
	prefix = "gopasst"
)

func init() {
	level.Store(int64(Warn))
	syslog = -1
}

// SetLevel sets the least severe level that is printed.
func SetLevel(l Level) { level.Store(int64(l)) }

// SetPrefix sets the program name of log file and system log lines
// ("passt"/"pasta").
func SetPrefix(p string) { prefix = p }

// Enabled reports whether lines at level l are printed.
func Enabled(l Level) bool { return l >= Level(level.Load()) }

// Debugging reports whether -d or --trace is in effect.
func Debugging() bool { return Enabled(Debug) }

// Tracing reports whether --trace is in effect.
func Tracing() bool { return Enabled(Trace) }

// SetFile sends log lines to f (opened by the caller before sandboxing,
// with O_APPEND), emptying it whenever it would grow past size bytes (0: no
// limit). Lines still go to stderr unless quietStderr is set.
func SetFile(f *os.File, size0 int64, quietStderr bool) {
	mu.Lock()
	defer mu.Unlock()
	file, limit, size = f, size0, 0
	if st, err := f.Stat(); err == nil {
		size = st.Size()
	}
	if quietStderr {
		out = io.Discard
	}
}

// The log file is emptied in place when it reaches --log-size: opened with
// O_APPEND, it is written at its new end afterwards without a seek.
var _ = allow.Syscall(allow.Both, "ftruncate", "logging: emptying the -l log file when it reaches --log-size (rotate)")

// rotate empties the log file. Called with mu held.
func rotate() {
	if err := file.Truncate(0); err == nil {
		size = 0
	}
}

// OpenSyslog connects to the system log (/dev/log) for the lines logged
// once the process is detached (Detach) without a log file. Call it before
// the sandbox: the socket cannot be made or connected afterwards. A system
// without /dev/log simply gets no lines, as with the C original.
func OpenSyslog() {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: "/dev/log"}); err != nil {
		unix.Close(fd)
		return
	}
	mu.Lock()
	if syslog >= 0 {
		unix.Close(syslog)
	}
	syslog = fd
	mu.Unlock()
}

// Detach stops writing to stderr: called once the process is in the
// background. Without a log file, lines go to the system log from then on
// if OpenSyslog connected to it.
func Detach() {
	mu.Lock()
	out = io.Discard
	mu.Unlock()
}

// syslogSeverity maps a level to RFC 5424 severities (err, warning, info,
// debug), with facility daemon (3).
func syslogSeverity(l Level) int {
	const daemon = 3 << 3
	switch {
	case l >= Error:
		return daemon | 3
	case l >= Warn:
		return daemon | 4
	case l >= Info:
		return daemon | 6
	}
	return daemon | 7
}

// emit writes msg, logged at l, to every destination in use.
func emit(l Level, msg string) {
	mu.Lock()
	defer mu.Unlock()
	if out != io.Discard {
		if Enabled(Debug) {
			// With debugging, lines carry the time since start as the
			// C original's do, which makes event ordering readable.
			d := time.Since(start)
			fmt.Fprintf(out, "%d.%04d: %s\n", int64(d/time.Second), int64(d%time.Second/(100*time.Microsecond)), msg)
		} else {
			fmt.Fprintf(out, "%s\n", msg)
		}
	}
	if file != nil {
		line := fmt.Sprintf("%s %s: %s\n", time.Now().Format(time.RFC3339), prefix, msg)
		if limit > 0 && size+int64(len(line)) > limit {
			rotate()
		}
		if n, err := file.WriteString(line); err == nil {
			size += int64(n)
		}
		return
	}
	if out == io.Discard && syslog >= 0 {
		// RFC 3164 framing, which every syslog daemon and journald
		// take: <PRI>TIMESTAMP TAG[PID]: MSG, written whole to a
		// connected datagram socket.
		line := fmt.Sprintf("<%d>%s %s[%d]: %s", syslogSeverity(l), time.Now().Format(time.Stamp), prefix, os.Getpid(), msg)
		unix.Write(syslog, []byte(line))
	}
}

// logf formats and emits a line at l, if l is enabled.
func logf(l Level, format string, args ...any) {
	if !Enabled(l) {
		return
	}
	emit(l, fmt.Sprintf(format, args...))
}

// Errorf logs an error line.
func Errorf(format string, args ...any) { logf(Error, format, args...) }

// Warnf logs a warning line.
func Warnf(format string, args ...any) { logf(Warn, format, args...) }

// Infof logs an informational line (shown unless -q).
func Infof(format string, args ...any) { logf(Info, format, args...) }

// Debugf logs a line shown with -d or --trace.
func Debugf(format string, args ...any) { logf(Debug, format, args...) }

// Tracef logs a line shown only with --trace.
func Tracef(format string, args ...any) { logf(Trace, format, args...) }

// Fatalf logs one error line and exits with status 1: the behaviour for a
// misconfiguration or a failed start-up step.
func Fatalf(format string, args ...any) {
	emit(Error, fmt.Sprintf(format, args...))
	os.Exit(1)
}

// Install makes this package the handler of log/slog's default logger (and
// so of the standard log package): slog.Info("...") comes out as Infof
// would print it, attributes appended as key=value.
func Install() { slog.SetDefault(slog.New(&handler{})) }

// handler is the slog.Handler behind Install.
type handler struct {
	attrs  []slog.Attr
	groups string // "a.b." for attributes inside WithGroup("a").WithGroup("b")
}

// Enabled implements slog.Handler with our level.
func (h *handler) Enabled(_ context.Context, l slog.Level) bool { return Enabled(l) }

// Handle implements slog.Handler: the message, then the attributes.
func (h *handler) Handle(_ context.Context, r slog.Record) error {
	if len(h.attrs) == 0 && r.NumAttrs() == 0 {
		emit(r.Level, r.Message)
		return nil
	}
	var b strings.Builder
	b.WriteString(r.Message)
	for _, a := range h.attrs {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
	}
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s%s=%v", h.groups, a.Key, a.Value)
		return true
	})
	emit(r.Level, b.String())
	return nil
}

// WithAttrs implements slog.Handler.
func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := &handler{groups: h.groups, attrs: append([]slog.Attr(nil), h.attrs...)}
	for _, a := range attrs {
		a.Key = h.groups + a.Key
		n.attrs = append(n.attrs, a)
	}
	return n
}

// WithGroup implements slog.Handler.
func (h *handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &handler{attrs: h.attrs, groups: h.groups + name + "."}
}
