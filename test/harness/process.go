package harness

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/test/logbuf"
)

// Process is a running tollgate command other than `tollgate dev`
// (`tollgate serve`, `tollgate mock`), with its output captured.
type Process struct {
	// URL is the root the process serves on, read from its log.
	URL    string
	cmd    *exec.Cmd
	done   chan struct{}
	err    error
	stdout logbuf.Buffer
	stderr logbuf.Buffer
}

// Addresses as the two commands log them: `tollgate serve` at info level
// ("msg=serving addr=HOST:PORT"), `tollgate mock` always ("serving on
// http://HOST:PORT").
var (
	serveAddrRE = regexp.MustCompile(`msg=serving addr=(\S+)`)
	mockAddrRE  = regexp.MustCompile(`serving on (http://\S+)`)
)

// StartServe runs `tollgate serve --config FILE --listen 127.0.0.1:0` plus
// extra args, in a clean environment plus env, and waits until it answers
// /healthz. The config must leave log_level at info or below: the listen
// address is read from the log. It is stopped with SIGTERM when the test
// ends.
func StartServe(t testing.TB, configFile string, env []string, extra ...string) *Process {
	t.Helper()
	return StartServeArgs(t, env, append([]string{"--config", configFile, "--listen", "127.0.0.1:0"}, extra...)...)
}

// StartServeArgs runs `tollgate serve` with args alone, as StartServe does:
// the listen address comes from them or their config file, port 0 for one
// the process picks and logs (so must the log level let it).
func StartServeArgs(t testing.TB, env []string, args ...string) *Process {
	t.Helper()
	p, err := launchServe(t, env, args...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// launchServe is StartServeArgs, returning an error if the process exited
// (or did not get ready in time) instead of failing the test.
func launchServe(t testing.TB, env []string, args ...string) (*Process, error) {
	t.Helper()
	return launch(t, append(CleanEnv(), env...), append([]string{"serve"}, args...), healthy, func(stderr string) string {
		if m := serveAddrRE.FindStringSubmatch(stderr); m != nil {
			return "http://" + m[1]
		}
		return ""
	})
}

// StartMock runs the standalone mock providers (`tollgate mock`) on a free
// loopback port; their APIs are under URL/openai, URL/anthropic and
// URL/gemini.
func StartMock(t testing.TB) *Process {
	t.Helper()
	return start(t, CleanEnv(), []string{"mock", "--listen", "127.0.0.1:0"}, answers(servedPath), mockURL)
}

// mockURL is the root `tollgate mock` logged, "" before it has.
func mockURL(stderr string) string {
	if m := mockAddrRE.FindStringSubmatch(stderr); m != nil {
		return m[1]
	}
	return ""
}

// answers returns a probe that GETs path under a root and wants a 200.
func answers(path string) func(root string) bool {
	return func(root string) bool {
		c := http.Client{Timeout: time.Second}
		resp, err := c.Get(root + path)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
}

// start runs tollgate with args and waits until url (read from its log)
// passes ready.
func start(t testing.TB, env, args []string, ready func(root string) bool, url func(stderr string) string) *Process {
	t.Helper()
	p, err := launch(t, env, args, ready, url)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// launch is start, returning the process and an error if it exited (or
// did not get ready in time) instead of failing the test.
func launch(t testing.TB, env, args []string, ready func(root string) bool, url func(stderr string) string) (*Process, error) {
	t.Helper()
	p := &Process{cmd: exec.Command(Binary(t), args...), done: make(chan struct{})}
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	// The process dies with the test binary, however that ends.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.Stop(t) })
	deadline := time.Now().Add(60 * time.Second)
	for {
		if u := url(p.stderr.String()); u != "" && ready(u) {
			p.URL = u
			return p, nil
		}
		select {
		case <-p.done:
			return p, fmt.Errorf("tollgate %v exited early: %v\n%s", args, p.err, p.stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return p, fmt.Errorf("tollgate %v did not start in time\n%s", args, p.stderr.String())
		}
	}
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// LoggedAddr waits until the process has logged an address after prefix
// (`msg="admin API"` finds the X of `msg="admin API" addr=X`) and returns
// it: the address a listener given port 0 bound. It fails the test if the
// process exits first.
func (p *Process) LoggedAddr(t testing.TB, prefix string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if a := loggedAddr(p.Stderr(), prefix); a != "" {
			return a
		}
		select {
		case <-p.done:
			t.Fatalf("tollgate %v exited without logging %s addr=: %v\n%s", p.cmd.Args[1:], prefix, p.err, p.Stderr())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("tollgate %v did not log %s addr= in time\n%s", p.cmd.Args[1:], prefix, p.Stderr())
		}
	}
}

// loggedAddr is the address logged after prefix in log, "" if none.
func loggedAddr(log, prefix string) string {
	if m := regexp.MustCompile(regexp.QuoteMeta(prefix) + ` addr=(\S+)`).FindStringSubmatch(log); m != nil {
		return m[1]
	}
	return ""
}

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Wait waits up to d for the process to exit and returns its exit error;
// exited is false if it still runs.
func (p *Process) Wait(d time.Duration) (exited bool, err error) {
	select {
	case <-p.done:
		return true, p.err
	case <-time.After(d):
		return false, nil
	}
}

// Stop sends SIGTERM and waits for the process to exit (a gateway flushes
// its usage records on the way out). Stopping twice does nothing.
func (p *Process) Stop(t testing.TB) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(40 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("tollgate %v did not stop on SIGTERM\n%s", p.cmd.Args[1:], p.stderr.String())
	}
}

// Stderr is what the process logged so far.
func (p *Process) Stderr() string { return p.stderr.String() }

// Stdout is what the process printed so far.
func (p *Process) Stdout() string { return p.stdout.String() }

// MockServed returns what the standalone mock providers at root received.
func MockServed(t testing.TB, root string) []Served {
	t.Helper()
	return served(t, root)
}
