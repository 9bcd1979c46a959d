// Package kube runs a real Kubernetes control plane for tests: etcd and
// kube-apiserver, built from the Go module proxy by test/kube/tools/build.sh
// (`make kube-tools`), as child processes on loopback ports in a temp dir,
// once per test binary. There is no controller-manager, scheduler or
// kubelet: objects are stored and admitted (webhooks, RBAC, validation,
// defaulting) but nothing acts on them, so a Deployment never gets pods.
//
// Binaries come from $KUBE_ASSETS, else <repo>/.cache/kube/bin. When
// KUBE_ASSETS is set (make test sets it) a missing binary fails the test;
// otherwise tests that need the control plane are skipped, so a quick
// `go test ./...` without the tools still runs everything else.
package kube

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tollgate-dev/tollgate/test/harness"
)

// Env is a running etcd + kube-apiserver.
type Env struct {
	// Config reaches the API server as a cluster admin (system:masters).
	Config *rest.Config
	// Client is a clientset on Config.
	Client kubernetes.Interface
	// Dir holds the data, certificates and the two processes' logs.
	Dir string

	procs []*proc
	logs  []string
}

// proc is a child process; exited is closed once it has been waited for.
type proc struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

var (
	sharedOnce sync.Once
	shared     *Env
	sharedErr  error
	skipReason string
)

// Main runs the tests (for TestMain) and stops the shared control plane,
// if one was started, before the test binary exits.
func Main(m *testing.M) int {
	code := m.Run()
	if shared != nil {
		shared.Stop()
	}
	return code
}

// Shared returns the control plane of this test binary, starting it on
// first use. It skips t when the binaries are not built and KUBE_ASSETS is
// unset, and fails t when they cannot start. Use it with Main in TestMain.
func Shared(t testing.TB) *Env {
	t.Helper()
	sharedOnce.Do(func() {
		etcd, apiserver, err := binaries()
		if err != nil {
			if os.Getenv("KUBE_ASSETS") == "" {
				skipReason = err.Error() + " (run `make kube-tools`, or set KUBE_ASSETS)"
				return
			}
			sharedErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		shared, sharedErr = Start(ctx, etcd, apiserver)
	})
	if skipReason != "" {
		t.Skip(skipReason)
	}
	if sharedErr != nil {
		t.Fatalf("kube: %v", sharedErr)
	}
	return shared
}

func binaries() (etcd, apiserver string, err error) {
	dir := os.Getenv("KUBE_ASSETS")
	if dir == "" {
		_, file, _, _ := runtime.Caller(0)
		dir = filepath.Join(filepath.Dir(file), "..", "..", ".cache", "kube", "bin")
	}
	etcd, apiserver = filepath.Join(dir, "etcd"), filepath.Join(dir, "kube-apiserver")
	for _, b := range []string{etcd, apiserver} {
		if _, err := os.Stat(b); err != nil {
			return "", "", fmt.Errorf("no %s in %s", filepath.Base(b), dir)
		}
	}
	return etcd, apiserver, nil
}

// Start runs etcd and kube-apiserver from the given binaries and waits
// until the API server reports ready. Stop ends both.
func Start(ctx context.Context, etcdBin, apiserverBin string) (_ *Env, err error) {
	dir, err := os.MkdirTemp("", "tollgate-kube-")
	if err != nil {
		return nil, err
	}
	e := &Env{Dir: dir}
	logged := false // err already holds the processes' logs
	defer func() {
		if err != nil {
			if !logged {
				err = fmt.Errorf("%w%s", err, e.logTails())
			}
			e.Stop()
		}
	}()
	// Both servers must be told their ports before they start: a port
	// picked free may be taken before they bind it, and they then exit;
	// they are started again on other ones.
	var clientURL string
	if _, err := harness.OnFreePorts(2, nil, func(addrs []string) error {
		clientURL = "http://" + addrs[0]
		peerURL := "http://" + addrs[1]
		data := filepath.Join(dir, "etcd")
		if err := os.RemoveAll(data); err != nil { // what an attempt before left
			return err
		}
		etcd, err := e.spawn("etcd", etcdBin,
			"--data-dir", data,
			"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
			"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
			"--initial-cluster", "default="+peerURL,
			// Throwaway data: durability costs time and buys nothing here.
			"--unsafe-no-fsync", "--log-level", "warn",
		)
		if err != nil {
			return err
		}
		if err := waitHTTP(ctx, etcd, http.DefaultClient, clientURL+"/health", nil, `"health":"true"`); err != nil {
			return fmt.Errorf("etcd: %w%s", err, e.logTails())
		}
		return nil
	}); err != nil {
		logged = true
		return nil, err
	}

	saKey, saPub, err := writeServiceAccountKeys(dir)
	if err != nil {
		return nil, err
	}
	token, err := randomHex(16)
	if err != nil {
		return nil, err
	}
	tokens := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(token+",admin,admin,system:masters\n"), 0o600); err != nil {
		return nil, err
	}
	certDir := filepath.Join(dir, "certs")
	var host string
	if _, err := harness.OnFreePorts(1, nil, func(addrs []string) error {
		port := strconv.Itoa(harness.Port(addrs[0]))
		apiserver, err := e.spawn("kube-apiserver", apiserverBin,
			"--etcd-servers", clientURL,
			"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", port,
			"--cert-dir", certDir,
			"--service-cluster-ip-range", "10.0.0.0/24",
			"--service-account-issuer", "https://kubernetes.default.svc",
			"--service-account-key-file", saPub, "--service-account-signing-key-file", saKey,
			"--token-auth-file", tokens,
			// RBAC, so the chart's roles are enforced for the identities the
			// tests impersonate; the admin token is in system:masters.
			"--authorization-mode", "RBAC",
			// No controller-manager makes the default ServiceAccount, which the
			// ServiceAccount plugin would require of every pod. Mutating and
			// validating webhooks stay on (they are on by default).
			"--disable-admission-plugins", "ServiceAccount",
			"--allow-privileged=true",
			"--enable-priority-and-fairness=false",
			// An advertise address on loopback is refused by the endpoint
			// reconciler; nothing here needs the kubernetes Service endpoints.
			"--endpoint-reconciler-type", "none",
		)
		if err != nil {
			return err
		}
		host = "https://127.0.0.1:" + port
		// The API server makes its own self-signed serving certificate at
		// start-up: probe without verifying, then trust that certificate.
		probe := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		if err := waitHTTP(ctx, apiserver, probe, host+"/readyz", map[string]string{"Authorization": "Bearer " + token}, "ok"); err != nil {
			return fmt.Errorf("kube-apiserver: %w%s", err, e.logTails())
		}
		return nil
	}); err != nil {
		logged = true
		return nil, err
	}
	ca, err := os.ReadFile(filepath.Join(certDir, "apiserver.crt"))
	if err != nil {
		return nil, fmt.Errorf("kube-apiserver serving certificate: %w", err)
	}
	e.Config = &rest.Config{
		Host:            host,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: ca},
		QPS:             100,
		Burst:           200,
	}
	if e.Client, err = kubernetes.NewForConfig(e.Config); err != nil {
		return nil, err
	}
	return e, nil
}

// Stop ends the API server and etcd and removes their data. The API
// server drains for a long time on SIGTERM; the data is throwaway, so it
// gets two seconds before SIGKILL.
func (e *Env) Stop() {
	for i := len(e.procs) - 1; i >= 0; i-- {
		p := e.procs[i]
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(2 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	}
	e.procs = nil
	if e.Dir != "" {
		_ = os.RemoveAll(e.Dir)
	}
}

// Impersonate returns a config that acts as the given user and groups,
// so RBAC decides what it may do.
func (e *Env) Impersonate(user string, groups ...string) *rest.Config {
	c := rest.CopyConfig(e.Config)
	c.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	return c
}

func (e *Env) spawn(name, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(e.Dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	f.Close() // the child holds its own descriptor
	p := &proc{name: name, cmd: cmd, exited: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	e.procs = append(e.procs, p)
	if !slices.Contains(e.logs, logPath) { // started again: the same log
		e.logs = append(e.logs, logPath)
	}
	return p, nil
}

// logTails is the end of each process log, for start-up errors.
func (e *Env) logTails() string {
	var b bytes.Buffer
	for _, p := range e.logs {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if len(data) > 4000 {
			data = data[len(data)-4000:]
		}
		fmt.Fprintf(&b, "\n--- %s (tail)\n%s", filepath.Base(p), data)
	}
	return b.String()
}

// waitHTTP polls url until it answers 200 with want in the body, p exits,
// or ctx ends. The body check tells p's answer from that of whatever else
// may hold the port until p fails to bind it and exits.
func waitHTTP(ctx context.Context, p *proc, c *http.Client, url string, headers map[string]string, want string) error {
	var last error
	for {
		// Each probe is bounded, so that an exit is noticed although
		// whatever took the port holds the connection without answering.
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		req, err := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
		if err != nil {
			cancel()
			return err
		}
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err == nil {
			var body []byte
			body, err = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			switch {
			case err != nil:
			case resp.StatusCode != http.StatusOK:
				err = fmt.Errorf("%s: %s", url, resp.Status)
			case !bytes.Contains(body, []byte(want)):
				err = fmt.Errorf("%s: answered %.200q, not %s's %q", url, body, p.name, want)
			default:
				cancel()
				return nil
			}
		}
		cancel()
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w", errors.Join(ctx.Err(), last))
		case <-p.exited:
			return fmt.Errorf("%s exited: %v (last probe: %v)", p.name, p.err, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// writeServiceAccountKeys makes the RSA key pair the API server signs and
// verifies service-account tokens with.
func writeServiceAccountKeys(dir string) (keyPath, pubPath string, err error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return "", "", err
	}
	keyPath, pubPath = filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600); err != nil {
		return "", "", err
	}
	return keyPath, pubPath, nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}
