package harness

import (
	"context"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tollgate-dev/tollgate/pkg/envvars"
	"github.com/tollgate-dev/tollgate/pkg/mockprovider"
	"github.com/tollgate-dev/tollgate/pkg/usage"
	"github.com/tollgate-dev/tollgate/sidecar"
	"github.com/tollgate-dev/tollgate/test/envoysim"
)

// FrontDoor is a running gateway as a workload reaches it: the variables
// it gets, the mock providers behind it, the ledger. The end-to-end suites
// run once per front door, so the standalone proxy and the Envoy sidecar
// path are held to the same results.
type FrontDoor interface {
	// Name is "dev" or "envoy".
	Name() string
	// GatewayToken is the token the workload's variables carry.
	GatewayToken() string
	// LedgerDir is the data dir holding the usage ledger.
	LedgerDir() string
	// Env is the provider variables a workload gets.
	Env(t testing.TB) map[string]string
	// Served is what the mock providers received, with their ground truth.
	Served(t testing.TB) []Served
	// Usage and WaitUsage read the ledger.
	Usage(t testing.TB) []usage.Record
	WaitUsage(t testing.TB, n int) []usage.Record
	// Stderr is what the gateway process logged.
	Stderr() string
	// Stop stops the gateway; records are flushed on the way out.
	Stop(t testing.TB)
}

// DoorOptions configure either front door.
type DoorOptions struct {
	// Catalog is a catalog overlay file.
	Catalog string
	// LogLevel of the gateway process (default info).
	LogLevel string
	// ChunkDelay is the mock providers' pause between streamed chunks.
	ChunkDelay time.Duration
	// ServeArgs are extra `tollgate serve` flags (Envoy door only).
	ServeArgs []string
	// Debug serves the processor's profiling endpoints (--debug-listen)
	// at Envoy.DebugAddr (Envoy door only).
	Debug bool
	// ServeEnv is extra environment for `tollgate serve`, such as the
	// operator's provider keys (Envoy door only: `tollgate dev --mock`
	// ignores keys).
	ServeEnv []string
}

// Doors are the front doors every end-to-end suite runs through.
var Doors = []string{"dev", "envoy"}

// StartDoor starts the named front door with the mock providers behind it.
func StartDoor(t testing.TB, name string, o DoorOptions) FrontDoor {
	t.Helper()
	switch name {
	case "dev":
		args := []string{"--mock"}
		if o.Catalog != "" {
			args = append(args, "--catalog", o.Catalog)
		}
		if o.LogLevel != "" {
			args = append(args, "--log-level", o.LogLevel)
		}
		if o.ChunkDelay > 0 {
			args = append(args, "--mock-chunk-delay", o.ChunkDelay.String())
		}
		return StartDev(t, args...)
	case "envoy":
		return StartEnvoy(t, o)
	}
	t.Fatalf("no front door %q", name)
	return nil
}

// Name implements FrontDoor.
func (d *Dev) Name() string { return "dev" }

// GatewayToken implements FrontDoor.
func (d *Dev) GatewayToken() string { return d.Token }

// LedgerDir implements FrontDoor.
func (d *Dev) LedgerDir() string { return d.DataDir }

// Envoy is the sidecar path: envoysim, configured from the sidecar's real
// bootstrap, in front of `tollgate serve` (ext_proc over gRPC), with the
// mock providers as the bootstrap's upstream clusters.
type Envoy struct {
	dir, token string
	Proxy      *envoysim.Proxy
	// Serve is the processor, `tollgate serve`.
	Serve *Process
	// DebugAddr is where the processor serves /debug/pprof, with
	// DoorOptions.Debug.
	DebugAddr string
	mocks     *mockprovider.Servers
	stopOnce  sync.Once
}

// Listen binds a free loopback port and keeps it bound: hand the listener
// to the server that is to serve there (envoysim.Options.Listener), so
// that no other process can take the port between picking and binding it.
// It is closed when the test ends, if the server has not closed it.
func Listen(t testing.TB) (net.Listener, uint32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln, uint32(ln.Addr().(*net.TCPAddr).Port)
}

// StartEnvoy starts the Envoy front door. The data dir gets the same
// account and project `tollgate dev` creates (plan pro, the same credits),
// through the admin CLI.
func StartEnvoy(t testing.TB, o DoorOptions) *Envoy {
	t.Helper()
	dir := t.TempDir()
	Run(t, "account", "create", "dev", "--plan", "pro", "--credits", "1000000", "--data-dir", dir)
	Run(t, "project", "create", "dev", "--account", "dev", "--activate", "--data-dir", dir)
	e := &Envoy{dir: dir, token: strings.TrimSpace(string(Run(t, "token", "mint", "--project", "dev", "--data-dir", dir))),
		mocks: mockprovider.NewServers(mockprovider.Options{ChunkDelay: o.ChunkDelay})}
	upstreams := map[string]string{}
	for name, m := range map[string]*mockprovider.Server{"openai": e.mocks.OpenAI, "anthropic": e.mocks.Anthropic, "gemini": e.mocks.Gemini} {
		srv := httptest.NewServer(m)
		t.Cleanup(srv.Close)
		upstreams[name] = strings.TrimPrefix(srv.URL, "http://")
	}
	extra := o.ServeArgs
	if o.Catalog != "" {
		extra = append(extra, "--catalog", o.Catalog)
	}
	if o.LogLevel != "" {
		extra = append(extra, "--log-level", o.LogLevel)
	}
	// The processor binds port 0 for gRPC (and profiling) and logs the
	// addresses it got, so no port is picked here and taken meanwhile.
	cfg := filepath.Join(dir, "serve.yaml")
	if err := os.WriteFile(cfg, []byte("data_dir: "+dir+"\ngrpc_listen: 127.0.0.1:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--config", cfg, "--listen", "127.0.0.1:0"}, extra...)
	if o.Debug {
		args = append(args, "--debug-listen", "127.0.0.1:0")
	}
	p, err := launchServe(t, o.ServeEnv, args...)
	if err != nil {
		t.Fatal(err)
	}
	e.Serve = p
	procAddr := p.LoggedAddr(t, `msg="serving envoy processor" network=tcp`)
	if o.Debug {
		e.DebugAddr = p.LoggedAddr(t, `msg="serving profiling"`)
	}
	t.Cleanup(func() { e.Stop(t) })
	waitServing(t, procAddr, e.Serve)

	// The sidecar's listener is bound here and handed over, so that its
	// port cannot be taken between building the bootstrap and serving.
	ln, port := Listen(t)
	b, err := sidecar.Bootstrap(sidecar.Options{ListenPort: port, Processor: procAddr})
	if err != nil {
		t.Fatal(err)
	}
	if err := sidecar.Validate(b); err != nil {
		t.Fatal(err)
	}
	if e.Proxy, err = envoysim.Start(b, envoysim.Options{Upstreams: upstreams, Listener: ln}); err != nil {
		t.Fatal(err)
	}
	return e
}

// waitServing waits for the processor's gRPC health check.
func waitServing(t testing.TB, addr string, p *Process) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "envoy.service.ext_proc.v3.ExternalProcessor"})
		cancel()
		if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
		select {
		case <-p.done:
			t.Fatalf("tollgate serve exited early: %v\n%s", p.err, p.Stderr())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("tollgate serve did not serve gRPC in time\n%s", p.Stderr())
		}
	}
}

// Name implements FrontDoor.
func (e *Envoy) Name() string { return "envoy" }

// GatewayToken implements FrontDoor.
func (e *Envoy) GatewayToken() string { return e.token }

// LedgerDir implements FrontDoor.
func (e *Envoy) LedgerDir() string { return e.dir }

// BaseURL is the sidecar listener's root.
func (e *Envoy) BaseURL() string { return e.Proxy.URL() }

// Env is what the injector sets in a pod: the same plan, pointing at the
// sidecar's listener, with nothing defined by the user.
func (e *Envoy) Env(t testing.TB) map[string]string {
	t.Helper()
	cfg := envvars.Config{BaseURL: e.Proxy.URL(), Key: e.token}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, v := range envvars.Plan(cfg, func(string) bool { return false }) {
		out[v.Name] = v.Value
	}
	return out
}

// Served implements FrontDoor.
func (e *Envoy) Served(t testing.TB) []Served {
	var out []Served
	for _, m := range []*mockprovider.Server{e.mocks.OpenAI, e.mocks.Anthropic, e.mocks.Gemini} {
		for _, s := range m.Served() {
			out = append(out, Served{Provider: m.Provider(), Served: s})
		}
	}
	return out
}

// Usage implements FrontDoor.
func (e *Envoy) Usage(t testing.TB) []usage.Record {
	t.Helper()
	return UsageIn(t, e.dir)
}

// WaitUsage implements FrontDoor.
func (e *Envoy) WaitUsage(t testing.TB, n int) []usage.Record {
	t.Helper()
	return waitUsage(t, e, n)
}

// Stderr implements FrontDoor.
func (e *Envoy) Stderr() string { return e.Serve.Stderr() }

// Stop closes the sidecar, then interrupts the processor and waits for it
// (records are flushed on the way out). Anything the simulator flagged in
// strict mode (accepted by Envoy, yet a processor bug) fails the test.
func (e *Envoy) Stop(t testing.TB) {
	e.stopOnce.Do(func() {
		if e.Proxy != nil {
			e.Proxy.Close()
			if v := e.Proxy.Violations(); len(v) > 0 {
				t.Errorf("envoysim strict mode: %d problems, first: %s", len(v), v[0])
			}
		}
		e.Serve.Stop(t)
	})
}

// Kill stops the processor at once, without letting it flush (the
// failure tests).
func (e *Envoy) Kill() {
	_ = e.Serve.cmd.Process.Kill()
	<-e.Serve.done
}

// waitUsage polls the ledger until it holds at least n records (the
// gateway writes them in batches, off the request path).
func waitUsage(t testing.TB, d FrontDoor, n int) []usage.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		recs := d.Usage(t)
		if len(recs) >= n {
			return recs
		}
		select {
		case <-ctx.Done():
			t.Fatalf("ledger has %d usage records, want %d", len(recs), n)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ProcessorPID is the pid of `tollgate serve`, for resource readings.
func (e *Envoy) ProcessorPID() int { return e.Serve.cmd.Process.Pid }
