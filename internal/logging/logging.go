// Package logging builds discoverd's one logger family: log/slog everywhere,
// and an hclog.Logger for hashicorp/raft that writes through the same slog
// handler, so every line of a node has one format and one destination.
package logging

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// New returns a logger writing to w in "text" or "json" format at level.
func New(w io.Writer, format string, level slog.Level) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

// ParseLevel parses debug, info, warn or error.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// Discard returns a logger that drops everything.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// HCLog adapts a slog.Logger to hclog.Logger for hashicorp/raft.
//
// Some lines hashicorp/raft writes as warnings or errors are what this
// node's own stop makes it write; they are written lower, so that a clean
// stop logs no error (Log says which).
func HCLog(l *slog.Logger, name string) hclog.Logger {
	base := l.With("component", name)
	return &hcAdapter{base: base, l: base, name: name, node: &nodeState{}}
}

// nodeState is what the node tells its Raft loggers of its stop; every
// logger derived from one HCLog shares it.
type nodeState struct {
	handingOver atomic.Bool // HandingOver
	stopping    atomic.Bool // Stopping
}

// HandingOver tells h, a logger made by HCLog or derived from one (and all
// the loggers derived from the same HCLog), whether its node is handing its
// leadership over, as it does when it stops. While it is, Raft's error that
// a peer has a newer term (staleTermMsg) is the handover taking effect.
// Loggers of other kinds are left as they are.
func HandingOver(h hclog.Logger, on bool) {
	if a, ok := h.(*hcAdapter); ok {
		a.node.handingOver.Store(on)
	}
}

// Stopping tells h, a logger made by HCLog or derived from one (and all the
// loggers derived from the same HCLog), that its node's Raft is about to
// stop: from then on Raft's failures to reach a peer are no news, as
// shutting Raft down wakes its replication from a backoff to try a peer
// that was down once more. Loggers of other kinds are left as they are.
func Stopping(h hclog.Logger) {
	if a, ok := h.(*hcAdapter); ok {
		a.node.stopping.Store(true)
	}
}

// staleTermMsg is what hashicorp/raft logs, at error level, when a leader
// learns from a peer of a newer term and steps down — as the leader that
// handed leadership over always does once the new leader is elected.
const staleTermMsg = "peer has newer term, stopping replication"

type hcAdapter struct {
	base  *slog.Logger // the component logger plus With args, without a subcomponent
	l     *slog.Logger // base plus the subcomponent, if named
	name  string
	sub   string
	args  []any
	level hclog.Level
	node  *nodeState
}

func toSlog(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Info, hclog.NoLevel, hclog.DefaultLevel:
		return slog.LevelInfo
	case hclog.Warn:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

func (a *hcAdapter) enabled(l hclog.Level) bool {
	if a.level != hclog.NoLevel && l < a.level {
		return false
	}
	return a.l.Enabled(context.Background(), toSlog(l))
}

// Log writes msg with args as hclog would render them (attrs), at level —
// lower if it is a warning or an error that this node's own stop causes:
// debug level for the errors of its own stop (ownStop) and, once its Raft
// stops, for failures to reach a peer (Stopping); info level for the end of
// its leadership when it hands it over (HandingOver).
func (a *hcAdapter) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.Off {
		return
	}
	as := attrs(args)
	switch {
	case level < hclog.Warn:
	case ownStop(as), a.node.stopping.Load() && peerFailure(as):
		level = hclog.Debug
	case msg == staleTermMsg && a.node.handingOver.Load():
		level = hclog.Info
	}
	if a.enabled(level) {
		a.l.LogAttrs(context.Background(), toSlog(level), msg, as...)
	}
}

// attrs turns hclog's key-value args into slog attributes, rendering the
// values hclog renders itself: hashicorp/raft logs some values with
// hclog.Fmt (its configuration, "servers"), which slog printed as the raw
// slice, a literal "[%+v [...]]"; Hex, Octal and Binary are numbers in
// their base. A key that is not a string is printed. A value left over at
// the end gets hclog's key EXTRA_VALUE_AT_END (slog would write it as
// !BADKEY), unless it is a stack trace.
func attrs(args []any) []slog.Attr {
	if len(args) == 0 {
		return nil
	}
	out := make([]slog.Attr, 0, (len(args)+1)/2)
	var last []slog.Attr
	if len(args)%2 == 1 {
		v := args[len(args)-1]
		args = args[:len(args)-1]
		if st, ok := v.(hclog.CapturedStacktrace); ok {
			last = []slog.Attr{slog.String("stacktrace", string(st))}
		} else {
			last = []slog.Attr{slog.Any(hclog.MissingKey, value(v))}
		}
	}
	for i := 0; i < len(args); i += 2 {
		k, ok := args[i].(string)
		if !ok {
			k = fmt.Sprint(args[i])
		}
		out = append(out, slog.Any(k, value(args[i+1])))
	}
	return append(out, last...)
}

// value renders the hclog value types as hclog does; any other value is
// left to the slog handler.
func value(v any) any {
	switch v := v.(type) {
	case hclog.Format:
		if len(v) > 0 {
			if f, ok := v[0].(string); ok {
				return fmt.Sprintf(f, v[1:]...)
			}
		}
		return fmt.Sprint(v...)
	case hclog.Hex:
		return "0x" + strconv.FormatUint(uint64(v), 16)
	case hclog.Octal:
		return "0" + strconv.FormatUint(uint64(v), 8)
	case hclog.Binary:
		return "0b" + strconv.FormatUint(uint64(v), 2)
	case hclog.Quote:
		return string(v) // the handler quotes what needs quoting
	case hclog.CapturedStacktrace:
		return string(v)
	}
	return v
}

// peerFailure reports whether a line carries a network error: a peer that
// could not be dialled, hung up or did not answer.
func peerFailure(as []slog.Attr) bool {
	for _, a := range as {
		err, ok := a.Value.Any().(error)
		var ne net.Error
		if ok && (errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
			return true
		}
	}
	return false
}

// ownStop reports whether a line carries an error that hashicorp/raft meets
// only because this node is stopping, or that it has already reported
// another way: Raft shut down, its transport shut down, or a connection
// this process closed itself (net.ErrClosed never comes from a peer). The
// node's stream layer closes every Raft connection when the node stops, and
// Raft then logged each read that ended as "failed to decode incoming
// command" at ERROR; the transport closes a connection on its own only
// after a failure on it, which the replication that follows reports with
// the peer's real error. Such lines are written at debug level: a clean
// stop logs no error.
func ownStop(as []slog.Attr) bool {
	for _, a := range as {
		err, ok := a.Value.Any().(error)
		if ok && (errors.Is(err, net.ErrClosed) || errors.Is(err, raft.ErrTransportShutdown) || errors.Is(err, raft.ErrRaftShutdown)) {
			return true
		}
	}
	return false
}
func (a *hcAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *hcAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *hcAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *hcAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *hcAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }
func (a *hcAdapter) IsTrace() bool                 { return a.enabled(hclog.Trace) }
func (a *hcAdapter) IsDebug() bool                 { return a.enabled(hclog.Debug) }
func (a *hcAdapter) IsInfo() bool                  { return a.enabled(hclog.Info) }
func (a *hcAdapter) IsWarn() bool                  { return a.enabled(hclog.Warn) }
func (a *hcAdapter) IsError() bool                 { return a.enabled(hclog.Error) }
func (a *hcAdapter) ImpliedArgs() []any            { return a.args }
func (a *hcAdapter) Name() string                  { return a.name }
func (a *hcAdapter) SetLevel(l hclog.Level)        { a.level = l }
func (a *hcAdapter) GetLevel() hclog.Level         { return a.level }

func (a *hcAdapter) With(args ...any) hclog.Logger {
	c := *a
	c.base = a.base.With(attrsAsArgs(attrs(args))...)
	c.l = c.withSub()
	c.args = append(append([]any{}, a.args...), args...)
	return &c
}

// attrsAsArgs is as, as the args of slog.Logger.With.
func attrsAsArgs(as []slog.Attr) []any {
	out := make([]any, len(as))
	for i, a := range as {
		out[i] = a
	}
	return out
}

func (a *hcAdapter) withSub() *slog.Logger {
	if a.sub == "" {
		return a.base
	}
	return a.base.With("subcomponent", a.sub)
}

func (a *hcAdapter) Named(name string) hclog.Logger {
	if a.name != "" {
		name = a.name + "." + name
	}
	return a.ResetNamed(name)
}

// ResetNamed replaces the subcomponent name (one key, never repeated).
func (a *hcAdapter) ResetNamed(name string) hclog.Logger {
	c := *a
	c.sub = name
	c.name = name
	c.l = c.withSub()
	return &c
}

func (a *hcAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(a.StandardWriter(opts), "", 0)
}

// StandardWriter returns a writer that logs each write as one line, as
// hclog's does: at opts.ForceLevel if set, else at the level its "[WARN]"
// (etc.) prefix names if opts.InferLevels, else at info level. The
// line is the message, never a format: a "%" in it is written as it is.
func (a *hcAdapter) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	var o hclog.StandardLoggerOptions
	if opts != nil {
		o = *opts
	}
	return writerFunc(func(p []byte) (int, error) {
		line := strings.TrimSpace(string(p))
		level := hclog.Info
		switch {
		case o.ForceLevel != hclog.NoLevel:
			_, line = levelPrefix(line)
			level = o.ForceLevel
		case o.InferLevels:
			if o.InferLevelsWithTimestamp {
				line = strings.TrimLeft(line, "0123456789 :/.+-TZ")
			}
			level, line = levelPrefix(line)
		}
		a.Log(level, line)
		return len(p), nil
	})
}

// levelPrefix splits the level prefix hclog recognises ("[ERROR]", "[ERR]",
// "[WARN]", "[INFO]", "[DEBUG]", "[TRACE]") off line; without one, the line
// is at info level.
func levelPrefix(line string) (hclog.Level, string) {
	for _, p := range []struct {
		prefix string
		level  hclog.Level
	}{
		{"[TRACE]", hclog.Trace}, {"[DEBUG]", hclog.Debug}, {"[INFO]", hclog.Info},
		{"[WARN]", hclog.Warn}, {"[ERROR]", hclog.Error}, {"[ERR]", hclog.Error},
	} {
		if rest, ok := strings.CutPrefix(line, p.prefix); ok {
			return p.level, strings.TrimSpace(rest)
		}
	}
	return hclog.Info, line
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
