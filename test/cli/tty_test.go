package cli_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/tollgate-dev/tollgate/test/harness"
)

// TestDevCtrlCReachesCMDOnce: Ctrl-C in a terminal signals the whole
// foreground process group, `tollgate dev` and CMD alike. Forwarding it
// as well would give CMD two SIGINTs, which many dev servers read as "force
// quit now". Run in a pseudo-terminal, CMD counts the SIGINTs it gets.
func TestDevCtrlCReachesCMDOnce(t *testing.T) {
	master, slave := openPTY(t)
	dir := t.TempDir()
	count, stop := filepath.Join(dir, "ints"), filepath.Join(dir, "stop")
	script := fmt.Sprintf(`trap 'echo int >> %s' INT; echo ready; while [ ! -f %s ]; do sleep 0.05; done`, count, stop)
	cmd := exec.Command(harness.Binary(t), "dev", "--mock", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "data"), "--", "sh", "-c", script)
	cmd.Env = harness.CleanEnv()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	// A session of its own with the terminal as its controlling one: the
	// gateway's process group is the terminal's foreground group, as in a
	// shell.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	done := make(chan error, 1)
	exited := make(chan struct{})
	go func() { done <- cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // its group: CMD too
		<-exited
	})

	out := make(chan string, 64)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			if n > 0 {
				out <- string(buf[:n])
			}
			if err != nil {
				close(out)
				return
			}
		}
	}()
	var seen strings.Builder
	for deadline := time.After(30 * time.Second); !strings.Contains(seen.String(), "ready"); {
		select {
		case s, ok := <-out:
			if !ok {
				t.Fatalf("the terminal closed before CMD was ready:\n%s", seen.String())
			}
			seen.WriteString(s)
		case <-deadline:
			t.Fatalf("CMD never started:\n%s", seen.String())
		}
	}
	if _, err := master.Write([]byte{3}); err != nil { // Ctrl-C
		t.Fatal(err)
	}
	time.Sleep(time.Second) // CMD's trap runs between its sleeps
	if err := os.WriteFile(stop, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("tollgate dev: %v\n%s", err, seen.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("tollgate dev did not exit after CMD did")
	}
	got, _ := os.ReadFile(count)
	if n := strings.Count(string(got), "int"); n != 1 {
		t.Errorf("CMD got %d SIGINTs from one Ctrl-C, want 1", n)
	}
}

// openPTY opens a pseudo-terminal pair (Linux /dev/ptmx).
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, master.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatalf("unlock pty: %v", e)
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, master.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Fatalf("pty number: %v", e)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty: %v", err)
	}
	return master, slave
}
