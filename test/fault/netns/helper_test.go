//go:build faultroot

package netns

// The helper process: the test binary re-executed inside a node namespace
// (the classic Go helper-process pattern, selected by an environment variable
// in TestMain so the test framework prints nothing on its stdout). It is a
// TCP echo server on the node's address plus a line protocol on stdin/stdout
// that lets the test dial from inside the namespace:
//
//	-> dial <id> <addr> <timeout-ms>   <- dial <id> ok | dial <id> fail <error>
//	-> open <id> <addr> <timeout-ms>   <- open <id> ok | open <id> fail <error>
//	-> send <id> <text>                (then <- recv <id> <text> once echoed)
//	                                   <- closed <id> <error> if the connection ends
//
// It exits when its stdin closes (the test process died or is done).

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	helperEnv = "DISCOVERD_NETNS_HELPER" // "agent" selects the helper mode
	listenEnv = "DISCOVERD_NETNS_LISTEN" // the helper's echo server address
	agentPort = 7070                     // every node namespace has its own ports
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "agent" {
		os.Exit(runAgent(os.Getenv(listenEnv), os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

// runAgent is the helper's main.
func runAgent(listen string, in io.Reader, out io.Writer) int {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		return 1
	}
	go serveEcho(ln)

	var wmu sync.Mutex
	say := func(format string, args ...any) {
		wmu.Lock()
		defer wmu.Unlock()
		fmt.Fprintf(out, format+"\n", args...)
	}
	say("ready %s", ln.Addr())

	var cmu sync.Mutex
	conns := map[string]net.Conn{}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), " ", 4)
		switch {
		case f[0] == "dial" && len(f) == 4:
			id, addr, timeout := f[1], f[2], parseMillis(f[3])
			go func() {
				if err := pingOnce(addr, timeout); err != nil {
					say("dial %s fail %v", id, err)
					return
				}
				say("dial %s ok", id)
			}()
		case f[0] == "open" && len(f) == 4:
			id, addr, timeout := f[1], f[2], parseMillis(f[3])
			go func() {
				c, err := net.DialTimeout("tcp", addr, timeout)
				if err != nil {
					say("open %s fail %v", id, err)
					return
				}
				cmu.Lock()
				conns[id] = c
				cmu.Unlock()
				say("open %s ok", id)
				r := bufio.NewScanner(c)
				for r.Scan() {
					say("recv %s %s", id, r.Text())
				}
				say("closed %s %v", id, r.Err())
			}()
		case f[0] == "send" && len(f) >= 3:
			cmu.Lock()
			c := conns[f[1]]
			cmu.Unlock()
			if c == nil {
				say("sendfail %s no such connection", f[1])
				continue
			}
			// A write only queues: it returns at once even while the link is cut.
			if _, err := io.WriteString(c, strings.Join(f[2:], " ")+"\n"); err != nil {
				say("sendfail %s %v", f[1], err)
			}
		default:
			say("error unknown command %q", sc.Text())
		}
	}
	return 0
}

func parseMillis(s string) time.Duration {
	ms, _ := strconv.Atoi(s)
	return time.Duration(ms) * time.Millisecond
}

// serveEcho echoes every line back on every accepted connection.
func serveEcho(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			r := bufio.NewScanner(c)
			for r.Scan() {
				if _, err := fmt.Fprintln(c, r.Text()); err != nil {
					return
				}
			}
		}()
	}
}

// pingOnce opens a connection to addr, sends a line and waits for its echo,
// all within timeout.
func pingOnce(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(deadline); err != nil {
		return err
	}
	if _, err := fmt.Fprintln(c, "ping"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "ping\n" {
		return fmt.Errorf("echo %q, want %q", line, "ping\n")
	}
	return nil
}

// agent is the test side of one helper process.
type agent struct {
	t     *testing.T
	node  int
	addr  string // the helper's echo server, IP(node):agentPort
	cmd   *exec.Cmd
	stdin io.WriteCloser

	wmu sync.Mutex // serialises writes to stdin

	mu    sync.Mutex
	chans map[string]chan string // "<kind> <id>" -> the rest of each such line
	seq   atomic.Int64
}

// startAgent runs the helper inside node i's namespace and waits until its
// echo server listens. The helper is killed by its own PID in t.Cleanup.
func startAgent(t *testing.T, nt *Net, i int) *agent {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	a := &agent{t: t, node: i, addr: net.JoinHostPort(nt.IP(i), strconv.Itoa(agentPort)), chans: map[string]chan string{}}
	a.cmd = nt.Command(i, exe)
	a.cmd.Env = append(os.Environ(), helperEnv+"=agent", listenEnv+"="+a.addr)
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	a.cmd.Stderr = testWriter{t, fmt.Sprintf("agent n%d: ", i)}
	a.stdin, err = a.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := a.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := a.cmd.Process.Pid
	t.Cleanup(func() {
		a.stdin.Close()
		_ = syscall.Kill(pid, syscall.SIGKILL) // its own PID, nothing broader
		_ = a.cmd.Wait()
	})
	ready := a.ch("ready")
	go a.readLoop(stdout)
	select {
	case <-ready:
	case <-time.After(15 * time.Second):
		t.Fatalf("agent in node %d did not become ready", i)
	}
	return a
}

func (a *agent) readLoop(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), " ", 3)
		key, rest := f[0], ""
		if len(f) > 1 && f[0] != "ready" && f[0] != "error" {
			key += " " + f[1]
		}
		if len(f) > 1 {
			rest = strings.Join(f[len(strings.Fields(key)):], " ")
		}
		select {
		case a.ch(key) <- rest:
		default: // nobody is listening for this many lines: drop
		}
	}
}

// ch returns the channel for lines with the given key, creating it.
func (a *agent) ch(key string) chan string {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.chans[key]
	if !ok {
		c = make(chan string, 64)
		a.chans[key] = c
	}
	return c
}

func (a *agent) send(format string, args ...any) {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	if _, err := fmt.Fprintf(a.stdin, format+"\n", args...); err != nil {
		a.t.Errorf("agent n%d: %v", a.node, err)
	}
}

// wait returns the next line of key, or an error after timeout.
func (a *agent) wait(key string, timeout time.Duration) (string, error) {
	select {
	case s := <-a.ch(key):
		return s, nil
	case <-time.After(timeout):
		return "", fmt.Errorf("agent n%d: no %q within %v", a.node, key, timeout)
	}
}

// dial makes a fresh connection from inside the agent's namespace to addr and
// checks one echo; nil means reachable.
func (a *agent) dial(addr string, timeout time.Duration) error {
	id := a.seq.Add(1)
	a.send("dial %d %s %d", id, addr, timeout.Milliseconds())
	res, err := a.wait(fmt.Sprintf("dial %d", id), timeout+10*time.Second)
	if err != nil {
		return err
	}
	if res == "ok" {
		return nil
	}
	return errors.New(strings.TrimPrefix(res, "fail "))
}

// conn is a long-lived connection held by an agent.
type conn struct {
	a  *agent
	id string
}

func (a *agent) open(addr string, timeout time.Duration) (*conn, error) {
	id := strconv.FormatInt(a.seq.Add(1), 10)
	a.send("open %s %s %d", id, addr, timeout.Milliseconds())
	res, err := a.wait("open "+id, timeout+10*time.Second)
	if err != nil {
		return nil, err
	}
	if res != "ok" {
		return nil, errors.New(strings.TrimPrefix(res, "fail "))
	}
	return &conn{a, id}, nil
}

func (c *conn) write(text string) { c.a.send("send %s %s", c.id, text) }

// recv returns the next echoed line, or an error after timeout.
func (c *conn) recv(timeout time.Duration) (string, error) {
	return c.a.wait("recv "+c.id, timeout)
}

// closedEvent reports a "closed" line already received for the connection.
func (c *conn) closedEvent() (string, bool) {
	select {
	case s := <-c.a.ch("closed " + c.id):
		return s, true
	default:
		return "", false
	}
}

// testWriter sends a helper's stderr to the test log.
type testWriter struct {
	t      *testing.T
	prefix string
}

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(w.prefix + strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
