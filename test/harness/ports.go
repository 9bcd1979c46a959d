package harness

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// portAttempts bounds how often OnFreePorts starts a server again on new
// ports when it finds one it was given taken.
const portAttempts = 5

// pickAddr hands out a loopback address whose port was free when asked
// (freeAddr; a test replaces it to hand out a taken one).
var pickAddr = freeAddr

// freeAddr is a loopback address whose port was free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// OnFreePorts starts a server that must be told its ports before it starts
// (it cannot be given port 0 and report the port it bound): start gets n
// loopback addresses whose ports were free a moment ago and starts the
// server on them, returning an error, with what the server logged, if it
// did not get ready. Another process can take such a port before the
// server binds it: when the error says that one of the addresses is in
// use, start is called again with new ones, up to 5 times in all. logf, if
// not nil, is told of each such retry. OnFreePorts returns the addresses
// the server started on, or start's last error.
//
// start should find the server ready by a sign of the server itself (its
// log, a file in its own directory, its process id), not by something
// answering on the address: another test's server that took the port
// answers there too.
//
// A server in this process should rather be handed a listener bound by
// Listen, and a tollgate command be given port 0 and read the port it
// bound from its log (Process.LoggedAddr).
func OnFreePorts(n int, logf func(format string, args ...any), start func(addrs []string) error) ([]string, error) {
	for attempt := 1; ; attempt++ {
		addrs := make([]string, n)
		for i := range addrs {
			a, err := pickAddr()
			if err != nil {
				return nil, err
			}
			addrs[i] = a
		}
		err := start(addrs)
		if err == nil {
			return addrs, nil
		}
		if attempt == portAttempts || !portTaken(err.Error(), addrs) {
			return nil, err
		}
		if logf != nil {
			logf("a port of %v was taken before the server bound it; starting it again on new ones", addrs)
		}
	}
}

// portTaken reports whether a server's error says that it could not bind
// one of addrs because it was in use. Servers word it differently
// ("address already in use", "Address already in use", EADDRINUSE), and
// some name only the port.
func portTaken(log string, addrs []string) bool {
	if !strings.Contains(strings.ToLower(log), "address already in use") {
		return false
	}
	for _, a := range addrs {
		if _, port, err := net.SplitHostPort(a); err == nil && strings.Contains(log, port) {
			return true
		}
	}
	return false
}

// Port is the port of a host:port address, 0 if it has none.
func Port(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}
