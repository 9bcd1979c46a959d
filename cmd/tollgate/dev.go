package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/envvars"
	"github.com/tollgate-dev/tollgate/pkg/ledger"
	"github.com/tollgate-dev/tollgate/pkg/meter"
	"github.com/tollgate-dev/tollgate/pkg/mockprovider"
	"github.com/tollgate-dev/tollgate/pkg/proxy"
)

// devState is what a running dev gateway leaves in its data dir for
// `tollgate env`.
type devState struct {
	PID     int      `json:"pid"`
	BaseURL string   `json:"base_url"`
	Token   string   `json:"token"`
	Mocked  []string `json:"mocked,omitempty"`
	// MockURL is where the built-in mock providers listen; GET
	// MockURL/_mock/served returns their ground truth.
	MockURL string    `json:"mock_url,omitempty"`
	Started time.Time `json:"started"`
}

const devStateFile = "dev.json"

// devShutdownGrace is how long requests in flight may take to finish when
// `tollgate dev` stops.
const devShutdownGrace = 5 * time.Second

func defaultDataDir() string {
	if d := os.Getenv("TOLLGATE_DATA_DIR"); d != "" {
		return d
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".tollgate")
	}
	return ".tollgate"
}

func newDevCmd() *cobra.Command {
	var (
		listen, dataDir, catalogFile, logLevel, adminListen string
		upstreamFlags                                       []string
		mock                                                bool
		chunkDelay                                          time.Duration
	)
	cmd := &cobra.Command{
		Use:   "dev [flags] [-- CMD ARGS...]",
		Short: "Run the gateway locally and, optionally, a command with the provider env vars set",
		Long: `Starts the standalone gateway on loopback, mints a local gateway token and sets
the provider variables (OPENAI_API_KEY/OPENAI_BASE_URL, ANTHROPIC_*, GEMINI_API_KEY/
GOOGLE_GEMINI_BASE_URL, AI_GATEWAY_KEY/AI_GATEWAY_BASE_URL) unless already defined.
With CMD it runs it, forwards signals and exits with its code (128+n when signal n
killed it, 127 when CMD is not found, 126 when it cannot be run); without, it prints
the exports and serves until interrupted. Ctrl-C and Ctrl-\ in a terminal reach CMD
from the terminal itself, once; they are not forwarded a second time.

Real provider keys come from TOLLGATE_OPENAI_API_KEY, TOLLGATE_ANTHROPIC_API_KEY and
TOLLGATE_GEMINI_API_KEY. A provider with no key and no --upstream uses the built-in
mock provider; --mock ignores the keys, so every provider without an --upstream does.`,
		Example: `  tollgate dev -- node server.js
  tollgate dev --mock --listen 127.0.0.1:0
  tollgate dev --upstream openai=http://127.0.0.1:9000 -- go test ./...`,
		RunE: func(cmd *cobra.Command, args []string) error {
			overrides, err := parsePairs(upstreamFlags, "--upstream")
			if err != nil {
				return err
			}
			keys := map[string]string{}
			if !mock {
				for _, p := range providerNames {
					if k := strings.TrimSpace(os.Getenv(keyEnv(p))); k != "" {
						keys[p] = k
					}
				}
			}
			return runDev(cmd.Context(), devOptions{
				listen: listen, dataDir: dataDir, catalogFile: catalogFile, logLevel: logLevel,
				overrides: overrides, keys: keys, chunkDelay: chunkDelay, args: args, adminListen: adminListen,
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:8787", "address to listen on (port 0 picks a free port, which \"tollgate env\" reports)")
	f.StringVar(&dataDir, "data-dir", defaultDataDir(), "where keys, usage records and the dev state live ($TOLLGATE_DATA_DIR)")
	f.StringVar(&catalogFile, "catalog", "", "YAML file that overrides or extends the model catalog")
	f.StringArrayVar(&upstreamFlags, "upstream", nil, "provider=URL: send that provider's traffic to URL (called without a key unless one is configured)")
	f.BoolVar(&mock, "mock", false, "ignore provider keys: every provider without an --upstream uses the built-in mock")
	f.DurationVar(&chunkDelay, "mock-chunk-delay", 0, "pause between streamed chunks of the mock providers")
	f.StringVar(&logLevel, "log-level", "warn", "debug, info, warn or error")
	f.StringVar(&adminListen, "admin-listen", "", adminListenUsage)
	return cmd
}

type devOptions struct {
	listen, dataDir, catalogFile, logLevel, adminListen string
	overrides, keys                                     map[string]string
	chunkDelay                                          time.Duration
	args                                                []string
}

func runDev(ctx context.Context, o devOptions) error {
	log, err := newLogger(o.logLevel)
	if err != nil {
		return err
	}
	var mocked []string
	var mockURL string
	for _, p := range providerNames {
		if _, ok := o.overrides[p]; !ok && o.keys[p] == "" {
			mocked = append(mocked, p)
		}
	}
	if len(mocked) > 0 {
		ml, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("mock providers: %w", err)
		}
		msrv := &http.Server{Handler: mockHandler(mockprovider.NewServers(mockprovider.Options{ChunkDelay: o.chunkDelay})), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = msrv.Serve(ml) }()
		defer msrv.Close()
		mockURL = "http://" + ml.Addr().String()
		for _, p := range mocked {
			o.overrides[p] = mockURL + "/" + p
		}
	}
	st, err := newStack(ctx, stackOptions{
		dataDir: o.dataDir, catalogFile: o.catalogFile, upstreams: o.overrides, keys: o.keys, logger: log,
		devAccount: true,
	})
	if err != nil {
		return err
	}
	defer st.closeAndLog(log)
	stopAdmin, err := startAdmin(ctx, o.adminListen, st, o.dataDir, log)
	if err != nil {
		return err
	}
	defer stopAdmin()

	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", o.listen, err)
	}
	// The dev listener also answers the gateway's metrics, for local
	// dashboards; every other request goes to the gateway as it came, as
	// under serve (a ServeMux would answer an uncleaned path, such as
	// "/openai/v1//chat/completions" from a base URL with a trailing
	// slash, with an empty redirect instead of the provider's error).
	metrics := st.metrics.Handler()
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == devMetricsPath {
			metrics.ServeHTTP(w, r)
			return
		}
		st.handler.ServeHTTP(w, r)
	})
	srv := proxy.NewServer(handler, 0)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	// On the way out, requests in flight get devShutdownGrace to finish;
	// longer ones are cut and recorded as such before the ledger closes.
	defer func() {
		grace, cancel := context.WithTimeout(hurry(ctx), devShutdownGrace)
		defer cancel()
		if n := st.stopHTTP(grace, srv); n > 0 {
			fmt.Fprintf(os.Stderr, "tollgate dev: cut %d request(s) still in flight after %v; their usage so far is recorded\n", n, devShutdownGrace)
		}
	}()

	token, err := st.keys.Mint(auth.Claims{Account: devAccount, Project: devProject, ExpiresAt: time.Now().Add(30 * 24 * time.Hour)})
	if err != nil {
		return fmt.Errorf("mint dev token: %w", err)
	}
	state := devState{PID: os.Getpid(), BaseURL: baseURLFor(ln.Addr().String()), Token: token, Mocked: mocked, MockURL: mockURL, Started: time.Now().UTC()}
	statePath := filepath.Join(o.dataDir, devStateFile)
	if err := writeJSONFile(statePath, state); err != nil {
		return err
	}
	defer removeIfOurs(statePath, state.PID)

	defined := envvars.FromEnviron(os.Environ())
	cfg := envvars.Config{BaseURL: state.BaseURL, Key: token}
	vars := envvars.Plan(cfg, defined)
	noteKept(os.Stderr, "tollgate dev", cfg, defined)
	if len(o.args) == 0 {
		fmt.Fprintf(os.Stderr, "tollgate dev: gateway on %s (mock providers: %s); data in %s\n",
			state.BaseURL, orNone(mocked), o.dataDir)
		fmt.Print(envvars.Exports(vars))
		select {
		case <-ctx.Done():
			return nil
		case err := <-serveErr:
			return err
		}
	}
	return runChild(o.args, envvars.Apply(os.Environ(), vars))
}

// runChild runs CMD with env, forwarding signals, and returns its exit code
// as an exitError.
func runChild(args []string, env []string) error {
	c := exec.Command(args[0], args[1:]...)
	c.Env = env
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := c.Start(); err != nil {
		// A shell's codes: 127 when CMD is not found, 126 when it cannot
		// be run, so that a script can tell these from CMD's own failure.
		code := 126
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			code = 127
		}
		return exitError{code: code, err: fmt.Errorf("start %s: %w", args[0], err)}
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	for {
		select {
		case s := <-sigs:
			if fromTerminal(s) {
				continue // CMD, in our process group, got it from the terminal too
			}
			_ = c.Process.Signal(s)
		case err := <-done:
			var ee *exec.ExitError
			switch {
			case err == nil:
				return nil
			case errors.As(err, &ee):
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					return exitError{code: 128 + int(ws.Signal())}
				}
				return exitError{code: ee.ExitCode()}
			default:
				return err
			}
		}
	}
}

// fromTerminal reports whether s is a signal the terminal sends to its
// whole foreground process group (Ctrl-C, Ctrl-\) while this process, and
// so CMD, which shares its group, is in that group: forwarding it would
// give CMD the signal twice, which dev servers read as "force quit".
func fromTerminal(s os.Signal) bool {
	if s != syscall.SIGINT && s != syscall.SIGQUIT {
		return false
	}
	tty, err := os.Open("/dev/tty") // the controlling terminal, if any
	if err != nil {
		return false
	}
	defer tty.Close()
	fg, err := unix.IoctlGetInt(int(tty.Fd()), unix.TIOCGPGRP)
	return err == nil && fg == syscall.Getpgrp()
}

// noteKept says on w which variables already defined kept a provider's
// pair from being set (names only, never values): left by an earlier
// `eval "$(tollgate env)"` they point at a gateway that may be gone.
func noteKept(w io.Writer, who string, cfg envvars.Config, defined func(string) bool) {
	label := map[string]string{envvars.ProviderGateway: "AI_GATEWAY_*", envvars.ProviderOpenAI: "OpenAI",
		envvars.ProviderAnthropic: "Anthropic", envvars.ProviderGemini: "Gemini"}
	for _, k := range envvars.KeptBy(cfg, defined) {
		fmt.Fprintf(w, "%s: %s variables not set: %s already defined (unset to use this gateway)\n", who, label[k.Provider], strings.Join(k.Names, ", "))
	}
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}

func removeIfOurs(path string, pid int) {
	var st devState
	if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &st) == nil && st.PID == pid {
		_ = os.Remove(path)
	}
}

func newEnvCmd() *cobra.Command {
	var dataDir string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "env",
		Short: "Print the provider variables for the dev gateway running on a data dir",
		Example: `  eval "$(tollgate env)"
  tollgate env --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := os.ReadFile(filepath.Join(dataDir, devStateFile))
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("no dev gateway is running on data dir %s; start one with `tollgate dev --data-dir %s`", dataDir, dataDir)
			}
			if err != nil {
				return err
			}
			var st devState
			if err := json.Unmarshal(b, &st); err != nil {
				return fmt.Errorf("%s: %w", devStateFile, err)
			}
			// A gateway killed outright leaves its state behind, and its
			// address may since serve another data dir's gateway, which
			// would refuse this token: one must hold this data dir too.
			if owned, err := ledger.SpoolOwned(spoolDir(dataDir)); err == nil && !owned {
				return fmt.Errorf("the dev gateway recorded in %s (%s, pid %d) is no longer running; start one with `tollgate dev --data-dir %s`", dataDir, st.BaseURL, st.PID, dataDir)
			}
			if !alive(cmd.Context(), st.BaseURL) {
				return fmt.Errorf("the dev gateway recorded in %s (%s) is not answering; start one with `tollgate dev --data-dir %s`", dataDir, st.BaseURL, dataDir)
			}
			defined := envvars.FromEnviron(os.Environ())
			cfg := envvars.Config{BaseURL: st.BaseURL, Key: st.Token}
			vars := envvars.Plan(cfg, defined)
			noteKept(cmd.ErrOrStderr(), "tollgate env", cfg, defined)
			if asJSON {
				m := make(map[string]string, len(vars))
				for _, v := range vars {
					m[v.Name] = v.Value
				}
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(m)
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), envvars.Exports(vars))
			return err
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", defaultDataDir(), "data dir of the dev gateway ($TOLLGATE_DATA_DIR)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON object instead of shell exports")
	return cmd
}

func alive(ctx context.Context, base string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/healthz", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Local development identity: the tokens `tollgate dev` mints belong to this
// account and project, created on first start.
const (
	devAccount = "dev"
	devProject = "dev"
	// devCredits is what the dev account starts with: enough for any
	// local session against the mock providers.
	devCredits = 1_000_000 * meter.MicroCredits
)

// ensureDevAccount creates the dev account and its activated project unless
// they exist; it leaves an existing account's settings alone.
func ensureDevAccount(ctx context.Context, st ledger.Store) error {
	if _, err := st.CreateAccount(ctx, devAccount, catalog.PlanPro, devCredits); err != nil && !errors.Is(err, ledger.ErrExists) {
		return fmt.Errorf("dev account: %w", err)
	}
	if _, err := st.CreateProject(ctx, devProject, devAccount, true); err != nil && !errors.Is(err, ledger.ErrExists) {
		return fmt.Errorf("dev project: %w", err)
	}
	return nil
}

// devMetricsPath is where `tollgate dev` serves Prometheus metrics, on its
// own loopback listener.
const devMetricsPath = "/_tollgate/metrics"
