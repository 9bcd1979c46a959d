package services

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/test/harness"
)

// Redis is a redis-server process of one test: no persistence, loopback
// only.
type Redis struct {
	t    testing.TB
	dir  string
	port int

	mu     sync.Mutex
	proc   *os.Process // nil when stopped
	exited chan error  // receives the process's exit
}

// StartRedis starts redis-server from PATH on a free loopback port, in a
// temporary directory, and stops it when the test ends. It fails the test
// when redis-server is not installed.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server is not installed (%v): .ci/run installs it (Debian package redis-server)", err)
	}
	r := &Redis{t: t, dir: t.TempDir()}
	t.Cleanup(r.Stop)
	// A free port can be taken between looking and listening: redis-server
	// then exits, and is started again on another one.
	if _, err := harness.OnFreePorts(1, t.Logf, func(addrs []string) error {
		r.port = harness.Port(addrs[0])
		return r.start()
	}); err != nil {
		t.Fatalf("redis: %v", err)
	}
	return r
}

// Addr is the host:port the server listens on.
func (r *Redis) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port))
}

// Stop kills the server (SIGKILL: an outage, not a shutdown) and waits
// for it to exit. Stopping a stopped server does nothing.
func (r *Redis) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc == nil {
		return
	}
	_ = r.proc.Kill()
	<-r.exited
	r.proc = nil
}

// Restart starts the server again on the same port, empty; it stops it
// first if it runs. Another process may take the port while the server is
// stopped: the restart then fails the test.
func (r *Redis) Restart() {
	r.t.Helper()
	r.Stop()
	if err := r.start(); err != nil {
		r.t.Fatalf("redis restart: %v", err)
	}
}

func (r *Redis) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cmd := exec.Command("redis-server",
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(r.port),
		"--dir", r.dir,
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--logfile", "",
	)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	// The server dies with the test binary, however that ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan error, 1)
	// Closed after the exit is sent: waitReady may have received it
	// already when start waits for it again.
	go func() { exited <- cmd.Wait(); close(exited) }()
	if err := waitReady(r.Addr(), cmd.Process.Pid, exited); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("redis-server on port %d: %w\n%s", r.port, err, log.String())
	}
	r.proc, r.exited = cmd.Process, exited
	return nil
}

// waitReady waits until the server at addr answers as process pid, or it
// exits. Answering is not enough: another test's server that took the
// port first answers there too.
func waitReady(addr string, pid int, exited <-chan error) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("exited: %v", err)
		default:
		}
		if p, err := serverPID(addr); err == nil && p == pid {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer from process %d within 10s", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// serverPID asks the server at addr for its process id (INFO server).
func serverPID(addr string) (int, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("INFO server\r\n")); err != nil {
		return 0, err
	}
	r := bufio.NewReader(c)
	head, err := r.ReadString('\n') // a bulk string: $LENGTH
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(head, "$")))
	if err != nil {
		return 0, fmt.Errorf("INFO answered %q", head)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\r\n") {
		if v, ok := strings.CutPrefix(line, "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, fmt.Errorf("no process_id in INFO server")
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 7)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if string(buf[:n]) != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", buf[:n])
	}
	return nil
}
