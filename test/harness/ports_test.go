package harness

import (
	"errors"
	"fmt"
	"net"
	"testing"
)

// handOut makes pickAddr hand out first, then free addresses, until the
// test ends, and returns what it handed out.
func handOut(t *testing.T, first ...string) *[]string {
	var handed []string
	pickAddr = func() (string, error) {
		a, err := freeAddr()
		if len(handed) < len(first) {
			a = first[len(handed)]
		}
		handed = append(handed, a)
		return a, err
	}
	t.Cleanup(func() { pickAddr = freeAddr })
	return &handed
}

// TestOnFreePortsPortTaken: a server told its port before it starts
// (`tollgate mock --listen ADDR`) finds it taken, as another test's
// process can take it between picking and binding. OnFreePorts starts it
// again on a new port, where it then serves.
func TestOnFreePortsPortTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	handed := handOut(t, taken.Addr().String())
	var mock *Process
	addrs, err := OnFreePorts(1, t.Logf, func(addrs []string) (err error) {
		mock, err = launch(t, CleanEnv(), []string{"mock", "--listen", addrs[0]}, answers(servedPath), mockURL)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(*handed) != 2 || (*handed)[0] != taken.Addr().String() || addrs[0] != (*handed)[1] {
		t.Fatalf("addresses handed out: %v, started on %v; want the taken one, then the one it started on", *handed, addrs)
	}
	if mock.URL != "http://"+addrs[0] {
		t.Errorf("the mock serves on %s, want http://%s", mock.URL, addrs[0])
	}
}

// TestOnFreePortsGivesUp: a port found taken every time ends after 5
// attempts, with the server's error; an error that is not about one of the
// server's ports being taken is returned at once.
func TestOnFreePortsGivesUp(t *testing.T) {
	for _, c := range []struct {
		name  string
		err   func(addrs []string) error
		calls int
	}{
		{"always taken", func(a []string) error {
			return fmt.Errorf("listen tcp %s: bind: address already in use", a[1])
		}, portAttempts},
		{"taken, as redis says it", func(a []string) error {
			return fmt.Errorf("Could not create server TCP listening socket %s: bind: Address already in use", a[0])
		}, portAttempts},
		{"another failure", func([]string) error { return errors.New("config: unknown key listen_port") }, 1},
		{"another address taken", func([]string) error {
			return errors.New("listen tcp 10.9.8.7:1: bind: address already in use")
		}, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			calls := 0
			var last error
			_, err := OnFreePorts(2, nil, func(addrs []string) error {
				calls++
				last = c.err(addrs)
				return last
			})
			if calls != c.calls || err == nil || err != last {
				t.Errorf("%d starts, error %v; want %d, the last start's error", calls, err, c.calls)
			}
		})
	}
}
