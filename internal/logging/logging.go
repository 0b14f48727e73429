// Package logging builds discoverd's one logger family: log/slog everywhere,
// and an hclog.Logger for hashicorp/raft that writes through the same slog
// handler, so every line of a node has one format and one destination.
package logging

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
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
func HCLog(l *slog.Logger, name string) hclog.Logger {
	base := l.With("component", name)
	return &hcAdapter{base: base, l: base, name: name}
}

type hcAdapter struct {
	base  *slog.Logger // the component logger plus With args, without a subcomponent
	l     *slog.Logger // base plus the subcomponent, if named
	name  string
	sub   string
	args  []any
	level hclog.Level
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

func (a *hcAdapter) Log(level hclog.Level, msg string, args ...any) {
	if a.enabled(level) {
		a.l.Log(context.Background(), toSlog(level), msg, args...)
	}
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
	c.base = a.base.With(args...)
	c.l = c.withSub()
	c.args = append(append([]any{}, a.args...), args...)
	return &c
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

func (a *hcAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		a.Info(strings.TrimSpace(string(p)))
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
