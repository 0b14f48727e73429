package logging_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/discoverd/discoverd/internal/logging"
)

// lines decodes the JSON lines written to buf.
func lines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q is not JSON: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// only returns the single JSON line written to buf and resets it.
func only(t *testing.T, buf *bytes.Buffer) map[string]any {
	t.Helper()
	ls := lines(t, buf)
	if len(ls) != 1 {
		t.Fatalf("want one line, got %d: %q", len(ls), buf.String())
	}
	buf.Reset()
	return ls[0]
}

func TestLogging_NewText(t *testing.T) {
	for _, format := range []string{"text", ""} {
		var buf bytes.Buffer
		l, err := logging.New(&buf, format, slog.LevelInfo)
		if err != nil {
			t.Fatalf("New(%q): %v", format, err)
		}
		l.Debug("hidden")
		l.Info("started", "addr", "127.0.0.1:1111")
		got := buf.String()
		if strings.Contains(got, "hidden") {
			t.Errorf("format %q: debug line written at info level: %q", format, got)
		}
		if !strings.Contains(got, "level=INFO msg=started addr=127.0.0.1:1111") {
			t.Errorf("format %q: got %q", format, got)
		}
	}
}

func TestLogging_NewJSON(t *testing.T) {
	var buf bytes.Buffer
	l, err := logging.New(&buf, "json", slog.LevelDebug)
	if err != nil {
		t.Fatal(err)
	}
	l.Debug("probe", "n", 3)
	m := only(t, &buf)
	if m["level"] != "DEBUG" || m["msg"] != "probe" || m["n"] != float64(3) {
		t.Errorf("got %v", m)
	}
}

func TestLogging_NewBadFormat(t *testing.T) {
	l, err := logging.New(&bytes.Buffer{}, "xml", slog.LevelInfo)
	if err == nil || l != nil {
		t.Fatalf("New(xml) = %v, %v; want an error", l, err)
	}
	if !strings.Contains(err.Error(), `"xml"`) {
		t.Errorf("error %q does not name the format", err)
	}
}

func TestLogging_ParseLevel(t *testing.T) {
	cases := []struct {
		in   string
		want slog.Level
	}{
		{"debug", slog.LevelDebug},
		{"info", slog.LevelInfo},
		{"warn", slog.LevelWarn},
		{"error", slog.LevelError},
		{"DEBUG", slog.LevelDebug},
		{"Warn", slog.LevelWarn},
	}
	for _, c := range cases {
		got, err := logging.ParseLevel(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "verbose", "trace", "inf"} {
		if _, err := logging.ParseLevel(bad); err == nil {
			t.Errorf("ParseLevel(%q) accepted", bad)
		} else if !strings.Contains(err.Error(), "want debug, info, warn or error") {
			t.Errorf("ParseLevel(%q): error %q does not say what is allowed", bad, err)
		}
	}
}

func TestLogging_Discard(t *testing.T) {
	l := logging.Discard()
	l.Error("nowhere")
	if l.Enabled(t.Context(), slog.LevelError) {
		t.Error("Discard logger is enabled")
	}
}

// hc returns an hclog adapter named name over a JSON logger at level.
func hc(level slog.Level, name string) (hclog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: level}))
	return logging.HCLog(l, name), &buf
}

func TestHCLog_WritesThroughSlogWithComponent(t *testing.T) {
	h, buf := hc(slog.LevelDebug, "raft")
	cases := []struct {
		log   func(string, ...any)
		level string
	}{
		{h.Debug, "DEBUG"},
		{h.Info, "INFO"},
		{h.Warn, "WARN"},
		{h.Error, "ERROR"},
	}
	for _, c := range cases {
		c.log("entering follower state", "leader-address", "127.0.0.1:1112", "term", 4)
		m := only(t, buf)
		if m["level"] != c.level || m["msg"] != "entering follower state" || m["component"] != "raft" ||
			m["leader-address"] != "127.0.0.1:1112" || m["term"] != float64(4) {
			t.Errorf("%s: got %v", c.level, m)
		}
	}
	h.Log(hclog.Info, "via Log")
	if m := only(t, buf); m["msg"] != "via Log" || m["level"] != "INFO" {
		t.Errorf("Log(Info): got %v", m)
	}
	if h.Name() != "raft" {
		t.Errorf("Name() = %q", h.Name())
	}
}

func TestHCLog_RespectsSlogLevel(t *testing.T) {
	cases := []struct {
		level                              slog.Level
		trace, debug, info, warning, error bool
	}{
		{slog.LevelDebug - 4, true, true, true, true, true},
		{slog.LevelDebug, false, true, true, true, true},
		{slog.LevelInfo, false, false, true, true, true},
		{slog.LevelWarn, false, false, false, true, true},
		{slog.LevelError, false, false, false, false, true},
	}
	for _, c := range cases {
		h, buf := hc(c.level, "raft")
		got := [5]bool{h.IsTrace(), h.IsDebug(), h.IsInfo(), h.IsWarn(), h.IsError()}
		want := [5]bool{c.trace, c.debug, c.info, c.warning, c.error}
		if got != want {
			t.Errorf("slog level %v: Is{Trace,Debug,Info,Warn,Error} = %v, want %v", c.level, got, want)
		}
		h.Trace("t")
		h.Debug("d")
		h.Info("i")
		h.Warn("w")
		h.Error("e")
		var msgs []string
		for _, m := range lines(t, buf) {
			msgs = append(msgs, m["msg"].(string))
		}
		var wantMsgs []string
		for i, on := range want {
			if on {
				wantMsgs = append(wantMsgs, []string{"t", "d", "i", "w", "e"}[i])
			}
		}
		if strings.Join(msgs, ",") != strings.Join(wantMsgs, ",") {
			t.Errorf("slog level %v: wrote %v, want %v", c.level, msgs, wantMsgs)
		}
	}
}

func TestHCLog_SetLevel(t *testing.T) {
	h, buf := hc(slog.LevelDebug, "raft")
	if h.GetLevel() != hclog.NoLevel {
		t.Errorf("initial GetLevel = %v, want NoLevel (follow slog)", h.GetLevel())
	}
	h.SetLevel(hclog.Warn)
	if h.GetLevel() != hclog.Warn {
		t.Errorf("GetLevel = %v", h.GetLevel())
	}
	if h.IsInfo() || !h.IsWarn() {
		t.Errorf("after SetLevel(Warn): IsInfo %v IsWarn %v", h.IsInfo(), h.IsWarn())
	}
	h.Info("dropped")
	h.Warn("kept")
	if m := only(t, buf); m["msg"] != "kept" {
		t.Errorf("got %v", m)
	}
	// SetLevel cannot open what slog closes.
	h2, buf2 := hc(slog.LevelError, "raft")
	h2.SetLevel(hclog.Trace)
	h2.Debug("still dropped")
	if buf2.Len() != 0 || h2.IsDebug() {
		t.Errorf("SetLevel(Trace) overrode the slog level: %q", buf2.String())
	}
	h.SetLevel(hclog.Off)
	h.Error("off")
	if buf.Len() != 0 {
		t.Errorf("SetLevel(Off) still wrote %q", buf.String())
	}
}

func TestHCLog_With(t *testing.T) {
	h, buf := hc(slog.LevelInfo, "raft")
	w := h.With("peer", "n2")
	w.Info("append")
	if m := only(t, buf); m["peer"] != "n2" || m["component"] != "raft" {
		t.Errorf("With: got %v", m)
	}
	if got := w.ImpliedArgs(); len(got) != 2 || got[0] != "peer" || got[1] != "n2" {
		t.Errorf("ImpliedArgs = %v", got)
	}
	w2 := w.With("term", 3)
	if got := w2.ImpliedArgs(); len(got) != 4 {
		t.Errorf("ImpliedArgs after a second With = %v", got)
	}
	// The parent is unchanged.
	if len(w.ImpliedArgs()) != 2 || len(h.ImpliedArgs()) != 0 {
		t.Errorf("With changed its parent: %v, %v", w.ImpliedArgs(), h.ImpliedArgs())
	}
	h.Info("plain")
	if m := only(t, buf); m["peer"] != nil {
		t.Errorf("parent logger carries the child's args: %v", m)
	}
}

func TestHCLog_NamedAndResetNamed(t *testing.T) {
	h, buf := hc(slog.LevelInfo, "raft")
	n := h.Named("net")
	if n.Name() != "raft.net" {
		t.Errorf("Named: Name() = %q, want raft.net", n.Name())
	}
	n.Info("dial")
	if m := only(t, buf); m["subcomponent"] != "raft.net" || m["component"] != "raft" {
		t.Errorf("Named: got %v", m)
	}
	r := n.ResetNamed("snapshot")
	if r.Name() != "snapshot" {
		t.Errorf("ResetNamed: Name() = %q, want snapshot", r.Name())
	}
	if h.Name() != "raft" || n.Name() != "raft.net" {
		t.Errorf("Named/ResetNamed changed a parent: %q, %q", h.Name(), n.Name())
	}
	// Implied args survive renaming.
	wn := h.With("peer", "n2").Named("net")
	wn.Info("x")
	if m := only(t, buf); m["peer"] != "n2" {
		t.Errorf("Named dropped implied args: %v", m)
	}
	// An empty name makes Named behave like ResetNamed.
	if got := logging.HCLog(logging.Discard(), "").Named("x").Name(); got != "x" {
		t.Errorf("Named on an unnamed logger: %q", got)
	}
}

// Regression: Named and ResetNamed used to add a new "subcomponent"
// attribute on top of the one already bound instead of replacing it, so a
// logger named twice wrote the key twice.
func TestHCLog_RenamingKeepsOneSubcomponent(t *testing.T) {
	h, buf := hc(slog.LevelInfo, "raft")
	for name, l := range map[string]hclog.Logger{
		"Named twice":            h.Named("net").Named("pool"),
		"ResetNamed after Named": h.Named("net").ResetNamed("snapshot"),
	} {
		l.Info("x")
		line := buf.String()
		buf.Reset()
		if n := strings.Count(line, `"subcomponent"`); n != 1 {
			t.Errorf("%s: %d subcomponent keys in %s", name, n, strings.TrimSpace(line))
		}
	}
}

func TestHCLog_StandardLogger(t *testing.T) {
	h, buf := hc(slog.LevelInfo, "raft")
	std := h.StandardLogger(&hclog.StandardLoggerOptions{})
	std.Printf("[WARN] raft-net: failed to accept connection: %s", "boom")
	m := only(t, buf)
	if m["msg"] != "[WARN] raft-net: failed to accept connection: boom" || m["component"] != "raft" || m["level"] != "INFO" {
		t.Errorf("StandardLogger line: %v", m)
	}
	w := h.StandardWriter(nil)
	n, err := w.Write([]byte("  padded line \n"))
	if err != nil || n != len("  padded line \n") {
		t.Errorf("StandardWriter.Write = %d, %v", n, err)
	}
	if m := only(t, buf); m["msg"] != "padded line" {
		t.Errorf("StandardWriter line: %v", m)
	}
	// Below the slog level nothing is written.
	q, qbuf := hc(slog.LevelWarn, "raft")
	q.StandardLogger(nil).Print("quiet")
	if qbuf.Len() != 0 {
		t.Errorf("StandardLogger wrote below the level: %q", qbuf.String())
	}
}

// Regression: hashicorp/raft logs its configuration with hclog.Fmt, which
// the adapter handed to slog as a raw slice: the line read
// servers="[%+v [{...}]]". Values are now rendered as hclog renders them.
func TestHCLog_FormatsHclogValues(t *testing.T) {
	h, buf := hc(slog.LevelInfo, "raft")
	servers := []raft.Server{{Suffrage: raft.Voter, ID: "n1", Address: "127.0.0.1:1111"}}
	h.Info("initial configuration", "index", 0, "servers", hclog.Fmt("%+v", servers))
	m := only(t, buf)
	if m["servers"] != "[{Suffrage:Voter ID:n1 Address:127.0.0.1:1111}]" {
		t.Errorf("hclog.Fmt value: servers = %q, want the formatted configuration", m["servers"])
	}
	h.Info("values", "hex", hclog.Hex(255), "octal", hclog.Octal(8), "binary", hclog.Binary(5),
		"quote", hclog.Quote("a b"), "percent", hclog.Fmt("%0.2f%%", 12.5))
	m = only(t, buf)
	for k, want := range map[string]string{"hex": "0xff", "octal": "010", "binary": "0b101", "quote": "a b", "percent": "12.50%"} {
		if m[k] != want {
			t.Errorf("%s = %v, want %q", k, m[k], want)
		}
	}
	// A key that is no string is printed; an odd value gets hclog's key.
	h.Warn("odd", 7, "seven", "left over")
	m = only(t, buf)
	if m["7"] != "seven" || m[hclog.MissingKey] != "left over" {
		t.Errorf("odd args: got %v", m)
	}
	if strings.Contains(fmt.Sprint(m), "BADKEY") {
		t.Errorf("odd args written as !BADKEY: %v", m)
	}
	// With renders its args the same way.
	h.With("servers", hclog.Fmt("%d voters", 3)).Info("x")
	if m := only(t, buf); m["servers"] != "3 voters" {
		t.Errorf("With(hclog.Fmt): servers = %v", m["servers"])
	}
	// In text too, no format verb is left in the line.
	var text bytes.Buffer
	logging.HCLog(slog.New(slog.NewTextHandler(&text, nil)), "raft").Info("initial configuration", "servers", hclog.Fmt("%+v", servers))
	if got := text.String(); strings.Contains(got, "%+v") || !strings.Contains(got, `servers="[{Suffrage:Voter ID:n1 Address:127.0.0.1:1111}]"`) {
		t.Errorf("text line: %s", got)
	}
}

// The errors hashicorp/raft meets only because its node is stopping (a
// connection the node closed, its transport or Raft shut down) are logged at
// debug level; a peer's real failure stays an error.
func TestHCLog_OwnStopErrorsAreDebug(t *testing.T) {
	closed := &net.OpError{Op: "read", Net: "tcp", Err: net.ErrClosed}
	for _, err := range []error{closed, raft.ErrTransportShutdown, raft.ErrRaftShutdown, fmt.Errorf("append: %w", raft.ErrRaftShutdown)} {
		h, buf := hc(slog.LevelDebug, "raft")
		h.Named("transport").Error("failed to decode incoming command", "error", err)
		if m := only(t, buf); m["level"] != "DEBUG" || m["error"] != err.Error() {
			t.Errorf("error %q: got %v, want a DEBUG line", err, m)
		}
		q, qbuf := hc(slog.LevelInfo, "raft")
		q.Warn("failed", "error", err)
		if qbuf.Len() != 0 {
			t.Errorf("error %q: written at info level: %s", err, qbuf.String())
		}
	}
	h, buf := hc(slog.LevelInfo, "raft")
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	h.Error("failed to appendEntries to", "peer", "n2", "error", refused)
	if m := only(t, buf); m["level"] != "ERROR" {
		t.Errorf("a peer's failure: got %v, want ERROR", m)
	}
}

func TestHCLog_StandardWriterLevels(t *testing.T) {
	h, buf := hc(slog.LevelDebug, "raft")
	infer := h.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	for line, want := range map[string][2]string{
		"[WARN] raft-net: slow":   {"WARN", "raft-net: slow"},
		"[ERR] boom":              {"ERROR", "boom"},
		"[DEBUG] detail":          {"DEBUG", "detail"},
		"no prefix at 100%":       {"INFO", "no prefix at 100%"},
		"[ERROR] 50% of %+v kept": {"ERROR", "50% of %+v kept"},
	} {
		infer.Print(line)
		if m := only(t, buf); m["level"] != want[0] || m["msg"] != want[1] {
			t.Errorf("InferLevels %q: got %v, want %v", line, m, want)
		}
	}
	stamped := h.StandardWriter(&hclog.StandardLoggerOptions{InferLevels: true, InferLevelsWithTimestamp: true})
	_, _ = stamped.Write([]byte("2026/12/07 11:52:41 [WARN] late\n"))
	if m := only(t, buf); m["level"] != "WARN" || m["msg"] != "late" {
		t.Errorf("InferLevelsWithTimestamp: got %v", m)
	}
	forced := h.StandardWriter(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug, InferLevels: true})
	_, _ = forced.Write([]byte("[ERROR] quiet"))
	if m := only(t, buf); m["level"] != "DEBUG" || m["msg"] != "quiet" {
		t.Errorf("ForceLevel: got %v", m)
	}
}

// A leader that hands leadership over learns of the new leader's term, and
// Raft logs that at error level: while the handover runs it is info, for
// every logger derived from the same HCLog; otherwise it stays an error.
func TestHCLog_HandingOverMakesTheNewTermInfo(t *testing.T) {
	h, buf := hc(slog.LevelInfo, "raft")
	raftLog := h.With("node", "n1") // as hashicorp/raft derives its own
	staleTerm := func() string {
		raftLog.Error("peer has newer term, stopping replication", "peer", "n2")
		return only(t, buf)["level"].(string)
	}
	if got := staleTerm(); got != "ERROR" {
		t.Errorf("before a handover: %s, want ERROR", got)
	}
	logging.HandingOver(h, true)
	if got := staleTerm(); got != "INFO" {
		t.Errorf("during a handover: %s, want INFO", got)
	}
	raftLog.Error("failed to appendEntries to", "peer", "n2", "error", errors.New("boom"))
	if m := only(t, buf); m["level"] != "ERROR" {
		t.Errorf("another error during a handover: %v, want ERROR", m)
	}
	logging.HandingOver(h, false)
	if got := staleTerm(); got != "ERROR" {
		t.Errorf("after a handover: %s, want ERROR", got)
	}
	logging.HandingOver(hclog.NewNullLogger(), true) // no adapter: ignored
}

// Once its node's Raft is stopping, Raft's failures to reach a peer are
// debug lines (shutting Raft down wakes its replication to try a peer that
// was down once more); other errors stay errors.
func TestHCLog_StoppingMakesPeerFailuresDebug(t *testing.T) {
	h, buf := hc(slog.LevelDebug, "raft")
	raftLog := h.With("node", "n1")
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	appendFailed := func(err error) string {
		raftLog.Error("failed to appendEntries to", "peer", "n2", "error", err)
		return only(t, buf)["level"].(string)
	}
	if got := appendFailed(refused); got != "ERROR" {
		t.Errorf("before the stop: %s, want ERROR", got)
	}
	logging.Stopping(h)
	for _, err := range []error{refused, io.EOF, fmt.Errorf("read: %w", io.ErrUnexpectedEOF)} {
		if got := appendFailed(err); got != "DEBUG" {
			t.Errorf("%v while stopping: %s, want DEBUG", err, got)
		}
	}
	if got := appendFailed(errors.New("bolt: write failed")); got != "ERROR" {
		t.Errorf("a store error while stopping: %s, want ERROR", got)
	}
	other, obuf := hc(slog.LevelDebug, "raft") // another node's logger
	other.Error("failed to appendEntries to", "error", refused)
	if m := only(t, obuf); m["level"] != "ERROR" {
		t.Errorf("another node's logger: %v, want ERROR", m)
	}
	logging.Stopping(hclog.NewNullLogger()) // no adapter: ignored
}
