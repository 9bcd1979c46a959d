package services

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/test/harness"
)

// Postgres is a PostgreSQL server of one test, from Debian's binaries,
// listening on a loopback port and on a unix socket in its own temporary
// directory, with trust authentication for the user "postgres".
type Postgres struct {
	t    testing.TB
	bin  string // the directory of initdb, postgres, pg_isready
	dir  string // data/, the socket and the log live here
	port int
	cred *syscall.Credential // the postgres user's, when the test runs as root

	mu        sync.Mutex
	proc      *os.Process // nil when stopped
	exited    chan error
	databases int // created by NewDatabase
}

// StartPostgres creates a database cluster in a temporary directory and
// starts a server on it, on a free loopback port, stopped and removed when
// the test ends. It fails the test when the binaries are missing.
//
// PostgreSQL refuses to run as root, so when the test does, the cluster
// belongs to, and the server runs as, the "postgres" system user that the
// Debian package creates.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	bin, err := postgresBin()
	if err != nil {
		t.Fatalf("postgres: %v: .ci/run installs them (Debian package postgresql)", err)
	}
	p := &Postgres{t: t, bin: bin}
	if os.Getuid() == 0 {
		if p.cred, err = postgresUser(); err != nil {
			t.Fatalf("postgres: running as root, and %v", err)
		}
	}
	// Not t.TempDir: its parent is private to root, and the server may
	// run as another user.
	if p.dir, err = os.MkdirTemp("", "tollgate-postgres-"); err != nil {
		t.Fatalf("postgres: %v", err)
	}
	t.Cleanup(func() {
		p.Stop()
		_ = os.RemoveAll(p.dir)
	})
	if p.cred != nil {
		if err := os.Chown(p.dir, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
			t.Fatalf("postgres: %v", err)
		}
	}
	initdb := p.command("initdb", "-D", p.data(), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync")
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("postgres: initdb: %v\n%s", err, out)
	}
	// A free port can be taken between looking and listening: postgres
	// then exits, and is started again on another one.
	if _, err := harness.OnFreePorts(1, t.Logf, func(addrs []string) error {
		p.port = harness.Port(addrs[0])
		return p.start()
	}); err != nil {
		t.Fatalf("postgres: %v", err)
	}
	return p
}

// postgresBin finds the newest installed server's binaries.
func postgresBin() (string, error) {
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(found) == 0 {
		return "", fmt.Errorf("no PostgreSQL server in /usr/lib/postgresql/*/bin")
	}
	version := func(path string) int {
		v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(path))))
		return v
	}
	return filepath.Dir(slices.MaxFunc(found, func(a, b string) int { return version(a) - version(b) })), nil
}

func postgresUser() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("no postgres user to run the server as (%v): install the Debian package postgresql", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("postgres user has uid %q gid %q", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

func (p *Postgres) data() string { return filepath.Join(p.dir, "data") }

// command runs one of the server's binaries, as the postgres user when the
// test is root, and kills it if the test binary dies.
func (p *Postgres) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(p.bin, name), args...)
	cmd.Dir = p.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: p.cred}
	return cmd
}

// URL is the server's connection URL for the user and database "postgres".
func (p *Postgres) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
}

// NewDatabase creates an empty database for one test, so that tests can
// share a server, and returns its URL.
func (p *Postgres) NewDatabase(t testing.TB) string {
	t.Helper()
	p.mu.Lock()
	p.databases++
	name := fmt.Sprintf("test_%d", p.databases)
	p.mu.Unlock()
	out, err := p.command("createdb", "-h", "127.0.0.1", "-p", strconv.Itoa(p.port), "-U", "postgres", name).CombinedOutput()
	if err != nil {
		t.Fatalf("postgres: createdb: %v\n%s", err, out)
	}
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.port, name)
}

// Stop stops the server the way a crash does (SIGQUIT: immediate shutdown,
// no checkpoint, crash recovery on the next start) and waits for it to
// exit. Committed transactions survive; connections are cut. Stopping a
// stopped server does nothing.
func (p *Postgres) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil {
		return
	}
	_ = p.proc.Signal(syscall.SIGQUIT)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		_ = p.proc.Kill()
		<-p.exited
	}
	p.proc = nil
}

// Start starts a stopped server again, on the same port and data. Another
// process may take the port while the server is stopped: the start then
// fails the test.
func (p *Postgres) Start() {
	p.t.Helper()
	if err := p.start(); err != nil {
		p.t.Fatalf("postgres restart: %v", err)
	}
}

func (p *Postgres) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc != nil {
		return nil
	}
	logPath := filepath.Join(p.dir, "postgres.log")
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := p.command("postgres", "-D", p.data(), "-p", strconv.Itoa(p.port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="+p.dir)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	exited := make(chan error, 1)
	// Closed after the exit is sent: waitReady may have received it
	// already when start waits for it again.
	go func() { exited <- cmd.Wait(); close(exited) }()
	if err := p.waitReady(exited); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		out, _ := os.ReadFile(logPath)
		return fmt.Errorf("postgres on port %d: %w\n%s", p.port, err, tail(out, 4000))
	}
	p.proc, p.exited = cmd.Process, exited
	return nil
}

// waitReady waits until pg_isready says the server accepts connections,
// or the server exits. It asks over the unix socket in the server's own
// directory, which the server makes only once it has bound its TCP port:
// on that port, another test's server that took it first answers too.
func (p *Postgres) waitReady(exited <-chan error) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("exited: %v", err)
		default:
		}
		ready := exec.Command(filepath.Join(p.bin, "pg_isready"), "-q", "-h", p.dir, "-p", strconv.Itoa(p.port), "-U", "postgres")
		if ready.Run() == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not accepting connections within 60s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func tail(b []byte, n int) string {
	s := string(b)
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return strings.TrimSpace(s)
}
