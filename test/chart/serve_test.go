package chart

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/ledger"
	"github.com/tollgate-dev/tollgate/test/harness"
)

// TestProcessorPodRunsTollgate runs the real tollgate binary the way the
// kubelet would run the rendered processor pod: every volume is laid out in
// a temp dir from the rendered ConfigMap and Secret (mount paths mapped
// there), and the container's args and literal env are used as rendered.
// Only the listen addresses are moved to free loopback ports. The binary
// rejects unknown config keys and missing key files, so a chart that drifts
// from `tollgate serve` fails here.
func TestProcessorPodRunsTollgate(t *testing.T) {
	r := render(t, vals(
		"providerKeys.openai", "sk-canary-openai",
		"providerKeys.anthropic", "sk-ant-canary",
		"processor.providers.gemini.upstream", "https://gemini.corp.example",
		"processor.providers.anthropic.versions", []any{"2023-06-01"},
		"processor.catalog", map[string]any{"models": []any{
			map[string]any{"provider": "openai", "name": "gpt-3.5-turbo", "like": "gpt-4o-mini"},
		}},
	))
	d := one[*appsv1.Deployment](t, r, "Deployment", processorName)
	c := container(t, d, "processor")
	root := t.TempDir()

	// Mount paths, longest first, so nested mounts map to their own dir.
	type mount struct{ path, dir string }
	var mounts []mount
	volumes := map[string]corev1.Volume{}
	for _, v := range d.Spec.Template.Spec.Volumes {
		volumes[v.Name] = v
	}
	for _, m := range c.VolumeMounts {
		v, ok := volumes[m.Name]
		if !ok {
			t.Fatalf("mount %s has no volume", m.Name)
		}
		dir := filepath.Join(root, m.Name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		switch {
		case v.ConfigMap != nil:
			cm := one[*corev1.ConfigMap](t, r, "ConfigMap", v.ConfigMap.Name)
			for k, data := range cm.Data {
				write(t, filepath.Join(dir, k), data)
			}
		case v.Secret != nil:
			s := one[*corev1.Secret](t, r, "Secret", v.Secret.SecretName)
			if len(v.Secret.Items) == 0 { // the whole Secret, an entry a file
				for k, data := range s.Data {
					write(t, filepath.Join(dir, k), string(data))
				}
			}
			for _, it := range v.Secret.Items {
				data, ok := s.Data[it.Key]
				if !ok {
					t.Fatalf("secret %s has no key %s", s.Name, it.Key)
				}
				write(t, filepath.Join(dir, it.Path), string(data))
			}
		case v.EmptyDir != nil:
		default:
			t.Fatalf("volume %s: type not emulated", m.Name)
		}
		mounts = append(mounts, mount{m.MountPath, dir})
	}
	slices.SortFunc(mounts, func(a, b mount) int { return len(b.path) - len(a.path) })
	var pairs []string
	for _, m := range mounts {
		pairs = append(pairs, m.path, m.dir)
	}
	// One pass, longest mount path first: a mapped dir is never mapped again.
	remap := strings.NewReplacer(pairs...).Replace
	// Config files hold mount paths (data dir, key files, catalog): remap
	// them in place, as if the kubelet had mounted at those paths.
	for _, m := range mounts {
		if volumes[filepath.Base(m.dir)].ConfigMap == nil {
			continue
		}
		entries, _ := os.ReadDir(m.dir)
		for _, e := range entries {
			p := filepath.Join(m.dir, e.Name())
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			write(t, p, remap(string(b)))
		}
	}

	args := []string{}
	for _, a := range c.Args {
		args = append(args, remap(a))
	}
	args = append(args, "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
		"--admin-listen", "127.0.0.1:0")
	env := harness.CleanEnv()
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+remap(e.Value))
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			env = append(env, e.Name+"="+string(one[*corev1.Secret](t, r, "Secret", ref.Name).Data[ref.Key]))
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, harness.Binary(t), args...)
	cmd.Env = env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	adminRE := regexp.MustCompile(`msg="admin API" addr=(\S+)`)
	httpRE := regexp.MustCompile(`msg=serving addr=(\S+)`)
	grpcRE := regexp.MustCompile(`msg="serving envoy processor" network=tcp addr=(\S+)`)
	metricsRE := regexp.MustCompile(`msg="serving metrics" addr=(\S+)`)
	var log strings.Builder
	addr, grpcAddr, adminAddr, metricsAddr := "", "", "", ""
	sc := bufio.NewScanner(stderr)
	for (addr == "" || grpcAddr == "" || adminAddr == "" || metricsAddr == "") && sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if m := httpRE.FindStringSubmatch(sc.Text()); m != nil {
			addr = m[1]
		}
		if m := grpcRE.FindStringSubmatch(sc.Text()); m != nil {
			grpcAddr = m[1]
		}
		if m := adminRE.FindStringSubmatch(sc.Text()); m != nil {
			adminAddr = m[1]
		}
		if m := metricsRE.FindStringSubmatch(sc.Text()); m != nil {
			metricsAddr = m[1]
		}
	}
	if addr == "" || grpcAddr == "" || adminAddr == "" || metricsAddr == "" {
		t.Fatalf("tollgate %v did not start serving HTTP and gRPC:\n%s", args, log.String())
	}
	go func() { // keep draining so the process never blocks on stderr
		for sc.Scan() {
		}
	}()
	// The probes as the kubelet runs them: gRPC health (service "") for
	// liveness, HTTP for startup and readiness.
	if p := c.LivenessProbe; p == nil || p.GRPC == nil || p.GRPC.Service != nil {
		t.Fatalf("liveness probe = %+v, want gRPC health of the server", p)
	}
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hr.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("gRPC health = %v, %v; want SERVING", hr, err)
	}
	for _, path := range []string{c.StartupProbe.HTTPGet.Path, c.ReadinessProbe.HTTPGet.Path} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s = %d", path, resp.StatusCode)
		}
	}
	if p := c.Ports; !slices.ContainsFunc(p, func(p corev1.ContainerPort) bool { return p.Name == "metrics" }) {
		t.Errorf("no metrics port in %+v", p)
	}
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /metrics = %d", resp.StatusCode)
	}

	// The admin API takes the rendered admin token, and only it.
	adminToken := string(one[*corev1.Secret](t, r, "Secret", "tg-tollgate-admin-token").Data["token"])
	for token, want := range map[string]int{adminToken: http.StatusOK, "not-the-token": http.StatusUnauthorized} {
		if got := harness.GetStatus(t, "http://"+adminAddr+"/v1/accounts", token); got != want {
			t.Errorf("admin API with token %q... = %d, want %d", token[:4], got, want)
		}
	}

	// The rendered catalog overlay is in force: the model it adds is served
	// to an account of the ledger in the rendered data dir.
	db, err := ledger.OpenSQLite(ctx, filepath.Join(remap("/var/lib/tollgate"), "usage.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.CreateAccount(ctx, "chart-test", catalog.PlanPro, 1_000_000); err != nil {
		t.Fatal(err)
	}
	if _, err := db.CreateProject(ctx, "chart-test", "chart-test", true); err != nil {
		t.Fatal(err)
	}
	db.Close()
	// Minted through the admin API, as the injector mints: signed with the
	// key of the rendered signing-keys Secret.
	req, _ := http.NewRequest(http.MethodPost, "http://"+adminAddr+"/v1/tokens", strings.NewReader(`{"project":"chart-test"}`))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var minted struct {
		Token string `json:"token"`
	}
	err = json.NewDecoder(resp.Body).Decode(&minted)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("mint through the admin API: %d %v", resp.StatusCode, err)
	}
	token := minted.Token
	// sharedKeys checks that who signed token with a key of the rendered
	// signing-keys Secret and made no key in the data dir.
	sharedKeys := func(who, token string) {
		t.Helper()
		claims, err := auth.Parse(token)
		if err != nil {
			t.Fatal(err)
		}
		if keys := one[*corev1.Secret](t, r, "Secret", "tg-tollgate-signing-keys").Data; keys[claims.KeyID+".pem"] == nil {
			t.Errorf("%s signed with key %q, not the signing-keys Secret's", who, claims.KeyID)
		}
		if _, err := os.Stat(filepath.Join(remap("/var/lib/tollgate"), "keys")); !os.IsNotExist(err) {
			t.Errorf("%s made a signing key in the data dir (%v) although signing_keys_dir is set", who, err)
		}
	}
	sharedKeys("the admin API", token)
	for model, want := range map[string]int{"gpt-3.5-turbo": http.StatusOK, "gpt-no-such-model": http.StatusNotFound} {
		if got := harness.GetStatus(t, "http://"+addr+"/openai/v1/models/"+model, token); got != want {
			t.Errorf("GET /openai/v1/models/%s = %d, want %d", model, got, want)
		}
	}

	// `kubectl exec … tollgate token mint` with the pod's env signs with the
	// shared keys too, and writes no key of its own.
	mint := exec.CommandContext(ctx, harness.Binary(t), "token", "mint", "--project", "chart-test")
	mint.Env = env
	out, err := mint.Output()
	if err != nil {
		t.Fatalf("tollgate token mint in the processor pod: %v", err)
	}
	sharedKeys("the CLI in the pod", strings.TrimSpace(string(out)))
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestInjectorArgsAreFlags: every flag the chart passes to `tollgate inject
// serve`, in every mode, is one the binary defines (a renamed flag would
// crash-loop the injector).
func TestInjectorArgsAreFlags(t *testing.T) {
	help := string(harness.Run(t, "inject", "serve", "--help"))
	for _, v := range []map[string]any{nil, vals("injector.certs.mode", "certManager", "injector.nativeSidecar", false, "injector.readEnvFromSecrets", true)} {
		d := one[*appsv1.Deployment](t, render(t, v), "Deployment", injectorName)
		args := container(t, d, "injector").Args
		if len(args) < 2 || args[0] != "inject" || args[1] != "serve" {
			t.Fatalf("args = %v, want inject serve ...", args)
		}
		for _, a := range args[2:] {
			name, _, _ := strings.Cut(a, "=")
			if !strings.HasPrefix(name, "--") || !regexp.MustCompile(`(?m)^\s+(-\w, )?`+regexp.QuoteMeta(name)+`\b`).MatchString(help) {
				t.Errorf("%s is not a flag of tollgate inject serve", a)
			}
		}
	}
}
