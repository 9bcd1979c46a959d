package injector

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/test/logbuf"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// canary is the value of a user's provider key in a Secret the webhook may
// read the keys of; it must never show up in a patch or a log.
const canary = "sk-canary-3f9a1c0e5b7d"

const testOwnNamespace = "tollgate-system"

func testConfig() Config {
	return Config{
		Proxy: Proxy{
			Name:          ProxyName,
			Image:         "envoyproxy/envoy:test",
			Bootstrap:     []byte(`{"test":"a bootstrap the mutation passes through"}`),
			ListenAddress: "127.0.0.1",
			ListenerPort:  15080,
			AdminPort:     15000,
			HealthPort:    15021,
			HealthPath:    "/healthz/ready",
			Resources:     DefaultProxyResources(),
			RunAsUser:     101,
		},
		SidecarMode:   SidecarNative,
		TokenSecret:   "tollgate-gateway-token",
		EnvFromPolicy: EnvFromSkip,
		OwnNamespace:  testOwnNamespace,
	}
}

func namespace(name string, labels, annotations map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: annotations}}
}

// testCluster is what the fake API server holds.
func testCluster() *fake.Clientset {
	enabled := func(account string) map[string]string {
		return map[string]string{LabelInject: ValueEnabled, KeyAccount: account}
	}
	return fake.NewClientset(
		namespace("fn", enabled("acme"), nil),
		namespace("fn-defaults", enabled("acme"), map[string]string{AnnotationDefinedEnv: "OPENAI_API_KEY, SOMETHING_ELSE"}),
		namespace("fn-frozen", enabled("frozen"), nil),
		namespace("fn-flaky", enabled("flaky"), nil),
		namespace("fn-no-account", map[string]string{LabelInject: ValueEnabled}, nil),
		namespace("plain", nil, nil),
		namespace("kube-system", map[string]string{LabelInject: ValueEnabled, KeyAccount: "acme"}, nil),
		namespace(testOwnNamespace, map[string]string{LabelInject: ValueEnabled, KeyAccount: "acme"}, nil),
		&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "provider-keys", Namespace: "fn"},
			Data:       map[string][]byte{"OPENAI_API_KEY": []byte(canary), "ANTHROPIC_BASE_URL": []byte("https://anthropic.example")},
		},
		&corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "settings", Namespace: "fn"},
			Data:       map[string]string{"BASE_URL": "https://anthropic.example", "TIMEOUT": "30"},
		},
	)
}

type fakeAccounts map[string]bool

func (f fakeAccounts) AccountEnabled(_ context.Context, account string) (bool, error) {
	enabled, ok := f[account]
	if !ok {
		return false, errors.New("admin API unreachable")
	}
	return enabled, nil
}

type testServer struct {
	*httptest.Server
	client *fake.Clientset
	logs   *logbuf.Buffer
}

// startWebhook serves the webhook over real HTTPS on loopback, with the
// client-go implementations of its lookups over a fake API server.
func startWebhook(t *testing.T, cfg Config, readSecrets bool) *testServer {
	t.Helper()
	client := testCluster()
	factory := informers.NewSharedInformerFactory(client, 0)
	nsLister := factory.Core().V1().Namespaces().Lister()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())

	logs := &logbuf.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m, err := NewMutator(cfg, APIKeys{Client: client, ReadSecrets: readSecrets},
		fakeAccounts{"acme": true, "frozen": false}, log)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(WebhookPath, NewWebhook(m, NamespaceLister{Lister: nsLister}, 0, log))
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	return &testServer{Server: srv, client: client, logs: logs}
}

// admissionReview builds a review the way the API server sends one for a
// pod CREATE (field set and order of a real kube-apiserver request).
func admissionReview(uid, namespace string, pod []byte, dryRun bool) []byte {
	name := ""
	var meta struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if json.Unmarshal(pod, &meta) == nil {
		name = meta.Metadata.Name
	}
	review := map[string]any{
		"kind":       "AdmissionReview",
		"apiVersion": "admission.k8s.io/v1",
		"request": map[string]any{
			"uid":             uid,
			"kind":            map[string]string{"group": "", "version": "v1", "kind": "Pod"},
			"resource":        map[string]string{"group": "", "version": "v1", "resource": "pods"},
			"requestKind":     map[string]string{"group": "", "version": "v1", "kind": "Pod"},
			"requestResource": map[string]string{"group": "", "version": "v1", "resource": "pods"},
			"name":            name,
			"namespace":       namespace,
			"operation":       "CREATE",
			"userInfo": map[string]any{
				"username": "system:serviceaccount:kube-system:replicaset-controller",
				"uid":      "0b4f1c9a-2d5e-4f8a-9c3b-7e6d5a4b3c2d",
				"groups":   []string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"},
			},
			"object":    json.RawMessage(pod),
			"oldObject": nil,
			"dryRun":    dryRun,
			"options":   map[string]any{"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-client-side-apply"},
		},
	}
	b, err := json.Marshal(review)
	if err != nil {
		panic(err)
	}
	return b
}

// call posts a review and returns the decoded response.
func (s *testServer) call(t *testing.T, body []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	resp, err := s.Client().Post(s.URL+WebhookPath, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, raw)
	}
	var out admissionv1.AdmissionReview
	strictDecode(t, raw, &out)
	if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" || out.Response == nil {
		t.Fatalf("not an AdmissionReview v1 response: %s", raw)
	}
	if strings.Contains(string(raw), canary) {
		t.Errorf("response carries the user's key: %s", raw)
	}
	return out.Response
}

func strictDecode(t *testing.T, raw []byte, v any) {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		t.Fatalf("strict decode into %T: %v\n%s", v, err, raw)
	}
}

// applyPatch applies a response's JSON patch to the pod as sent.
func applyPatch(t *testing.T, pod []byte, resp *admissionv1.AdmissionResponse) []byte {
	t.Helper()
	if len(resp.Patch) == 0 {
		if resp.PatchType != nil {
			t.Errorf("patchType %q without a patch", *resp.PatchType)
		}
		return pod
	}
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patchType = %v, want JSONPatch", resp.PatchType)
	}
	p, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatalf("decoding the patch: %v\n%s", err, resp.Patch)
	}
	out, err := p.Apply(pod)
	if err != nil {
		t.Fatalf("applying the patch: %v\n%s", err, resp.Patch)
	}
	return out
}

// canonical re-indents JSON with sorted keys, for golden files.
func canonical(t *testing.T, raw []byte) []byte {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(out, '\n')
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run with -update after checking):\n--- got\n%s", path, got)
	}
}

func readPod(t *testing.T, file string) []byte {
	t.Helper()
	j, err := readPodFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// readPodFile reads a test pod from YAML as the JSON the API server sends.
func readPodFile(file string) ([]byte, error) {
	y, err := os.ReadFile(filepath.Join("testdata", "webhook", file))
	if err != nil {
		return nil, err
	}
	return yaml.YAMLToJSON(y)
}

type webhookCase struct {
	name      string
	file      string
	namespace string // the request's namespace
	dryRun    bool
	// configuration variants
	mode        string
	policy      string
	readSecrets bool
	ports       []int32 // the proxy's listener, admin and health ports
	// what the test expects besides the golden pod
	wantStatus string // the status annotation after the patch, "" for none
	untouched  bool   // no patch although the status is set (it was already)
}

var webhookCases = []webhookCase{
	{name: "no-env", file: "no-env.yaml", namespace: "fn", wantStatus: StatusInjected},
	{name: "no-env-container-mode", file: "no-env.yaml", namespace: "fn", mode: SidecarContainer, wantStatus: StatusInjected},
	{name: "openai-key-only", file: "openai-key-only.yaml", namespace: "fn", wantStatus: StatusInjected},
	{name: "openai-base-url-only", file: "openai-base-url-only.yaml", namespace: "fn", wantStatus: StatusInjected},
	{name: "google-api-key", file: "google-api-key.yaml", namespace: "fn", wantStatus: StatusInjected},
	{name: "google-vertex-base-url", file: "google-vertex-base-url.yaml", namespace: "fn", wantStatus: StatusInjected},
	{name: "envfrom-secret-read", file: "envfrom-secret.yaml", namespace: "fn", readSecrets: true, wantStatus: StatusInjected},
	{name: "envfrom-secret-unreadable-skip", file: "envfrom-secret.yaml", namespace: "fn", wantStatus: StatusInjected},
	{name: "envfrom-secret-unreadable-inject", file: "envfrom-secret.yaml", namespace: "fn", policy: EnvFromInject, wantStatus: StatusInjected},
	{name: "envfrom-secret-prefix", file: "envfrom-secret-prefix.yaml", namespace: "fn", wantStatus: StatusInjected},
	{name: "envfrom-configmap", file: "envfrom-configmap.yaml", namespace: "fn", wantStatus: StatusInjected},
	{name: "namespace-defined-env", file: "generate-name-only.yaml", namespace: "fn-defaults", wantStatus: StatusInjected},
	{name: "several-containers", file: "several-containers.yaml", namespace: "fn", ports: istioFreePorts, wantStatus: StatusInjected},
	{name: "init-and-ephemeral", file: "init-and-ephemeral.yaml", namespace: "fn", wantStatus: StatusInjected},
	{name: "gateway-defined", file: "gateway-defined.yaml", namespace: "fn", wantStatus: StatusInjected},
	{name: "generate-name-only", file: "generate-name-only.yaml", namespace: "fn", wantStatus: StatusInjected},
	{name: "dry-run", file: "no-env.yaml", namespace: "fn", dryRun: true, wantStatus: StatusInjected},
	{name: "account-unreachable", file: "generate-name-only.yaml", namespace: "fn-flaky", wantStatus: StatusInjected},

	{name: "already-injected", file: "already-injected.yaml", namespace: "fn", wantStatus: StatusInjected, untouched: true},
	{name: "opted-out-annotation", file: "opted-out-annotation.yaml", namespace: "fn"},
	{name: "opted-out-label", file: "opted-out-label.yaml", namespace: "fn"},
	{name: "invalid-opt-value", file: "invalid-opt-value.yaml", namespace: "fn"},
	{name: "namespace-not-opted-in", file: "generate-name-only.yaml", namespace: "plain"},
	{name: "system-namespace", file: "generate-name-only.yaml", namespace: "kube-system"},
	{name: "own-namespace", file: "generate-name-only.yaml", namespace: testOwnNamespace},

	{name: "host-network", file: "host-network.yaml", namespace: "fn", wantStatus: "skipped: hostNetwork pod: the proxy's ports would bind on the node"},
	{name: "account-disabled", file: "generate-name-only.yaml", namespace: "fn-frozen", wantStatus: "skipped: the account has AI features disabled"},
	{name: "no-account", file: "generate-name-only.yaml", namespace: "fn-no-account", wantStatus: `skipped: namespace "fn-no-account" names no account (tollgate.dev/account)`},
	{name: "name-conflict", file: "name-conflict.yaml", namespace: "fn", wantStatus: `skipped: the pod already has a container named "tollgate-proxy"`},

	// The edge-case checklist (docs/injector.md).
	{name: "valuefrom-kinds", file: "valuefrom-kinds.yaml", namespace: "fn", wantStatus: StatusInjected},
	{name: "env-and-envfrom", file: "env-and-envfrom.yaml", namespace: "fn", readSecrets: true, wantStatus: StatusInjected},
	{name: "env-references", file: "env-references.yaml", namespace: "fn", wantStatus: StatusInjected},
	{name: "automount-false", file: "automount-false.yaml", namespace: "fn", wantStatus: StatusInjected},
	{name: "share-process-namespace", file: "share-process-namespace.yaml", namespace: "fn", wantStatus: StatusInjected},
	{name: "pod-level-resources", file: "pod-level-resources.yaml", namespace: "fn", wantStatus: StatusInjected},
	{name: "managed-fields", file: "managed-fields.yaml", namespace: "fn", wantStatus: StatusInjected},
	{name: "job-native", file: "job.yaml", namespace: "fn", wantStatus: StatusInjected},
	{name: "istio-other-ports", file: "istio.yaml", namespace: "fn", ports: istioFreePorts, wantStatus: StatusInjected},
	{name: "mirror-pod", file: "mirror-pod.yaml", namespace: "fn"},
	{name: "windows", file: "windows.yaml", namespace: "fn", wantStatus: "skipped: Windows pod: the proxy image is Linux only"},
	{name: "job-container-mode", file: "job.yaml", namespace: "fn", mode: SidecarContainer,
		wantStatus: `skipped: restartPolicy Never pod and the proxy is a regular container (sidecar mode "container"): it would keep the pod from completing; native sidecars do not`},
	{name: "istio-port-conflict", file: "istio.yaml", namespace: "fn",
		wantStatus: `skipped: container "istio-proxy" uses port 15000, which the proxy needs (the injector's --proxy-*-port flags choose other ports)`},
	{name: "port-conflict", file: "port-conflict.yaml", namespace: "fn",
		wantStatus: `skipped: container "app" uses port 15080, which the proxy needs (the injector's --proxy-*-port flags choose other ports)`},
}

// istioFreePorts are proxy ports clear of Istio's (15000-15090 are partly
// its own), for pods that also carry istio-proxy.
var istioFreePorts = []int32{15080, 15100, 15121}

func TestWebhookGolden(t *testing.T) {
	for _, tc := range webhookCases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			if tc.mode != "" {
				cfg.SidecarMode = tc.mode
			}
			if tc.policy != "" {
				cfg.EnvFromPolicy = tc.policy
			}
			if tc.ports != nil {
				cfg.Proxy.ListenerPort, cfg.Proxy.AdminPort, cfg.Proxy.HealthPort = tc.ports[0], tc.ports[1], tc.ports[2]
			}
			srv := startWebhook(t, cfg, tc.readSecrets)
			pod := readPod(t, tc.file)
			uid := "c3d1a7e2-0f4b-4e8a-b5c6-" + fmt.Sprintf("%012d", len(tc.name))

			resp := srv.call(t, admissionReview(uid, tc.namespace, pod, tc.dryRun))
			if string(resp.UID) != uid || !resp.Allowed {
				t.Fatalf("uid %q allowed %v, want %q allowed", resp.UID, resp.Allowed, uid)
			}
			got := applyPatch(t, pod, resp)
			var decoded corev1.Pod
			strictDecode(t, got, &decoded)
			if bytes.Contains(resp.Patch, []byte(`"/metadata/managedFields`)) {
				t.Errorf("the patch touches managedFields: %s", resp.Patch)
			}
			if (tc.wantStatus == "" || tc.untouched) && len(resp.Patch) != 0 {
				t.Errorf("a pod the injector must not touch got a patch: %s", resp.Patch)
			}
			if s := decoded.Annotations[AnnotationStatus]; s != tc.wantStatus {
				t.Errorf("status annotation %q, want %q", s, tc.wantStatus)
			}
			golden(t, filepath.Join("testdata", "webhook", tc.name+".golden.json"), canonical(t, got))
			checkInvariants(t, cfg, pod, &decoded)

			// Reinvocation and re-injection: our own output comes back
			// unchanged.
			again := srv.call(t, admissionReview(uid+"-again", tc.namespace, got, tc.dryRun))
			if len(again.Patch) != 0 {
				t.Errorf("second pass patched again: %s", again.Patch)
			}

			// Side effects: the webhook only ever reads from the API.
			for _, a := range srv.client.Actions() {
				if v := a.GetVerb(); v != "get" && v != "list" && v != "watch" {
					t.Errorf("webhook wrote to the API: %s %s", v, a.GetResource().Resource)
				}
			}
			if logs := srv.logs.String(); strings.Contains(logs, canary) {
				t.Errorf("logs carry the user's key:\n%s", logs)
			}
		})
	}
}

// TestWebhookDryRunSamePatch: a dry-run request gets exactly the patch a
// real one gets (kubectl diff and --dry-run=server show the truth).
func TestWebhookDryRunSamePatch(t *testing.T) {
	srv := startWebhook(t, testConfig(), false)
	pod := readPod(t, "no-env.yaml")
	real := srv.call(t, admissionReview("u1", "fn", pod, false))
	dry := srv.call(t, admissionReview("u2", "fn", pod, true))
	if len(real.Patch) == 0 || !bytes.Equal(real.Patch, dry.Patch) {
		t.Errorf("dry-run patch differs:\nreal %s\ndry  %s", real.Patch, dry.Patch)
	}
}

// checkInvariants holds for every case: user entries unchanged and in
// order after ours, the token only by Secret reference, ours first.
func checkInvariants(t *testing.T, cfg Config, before []byte, after *corev1.Pod) {
	t.Helper()
	var orig corev1.Pod
	if err := json.Unmarshal(before, &orig); err != nil {
		t.Fatal(err)
	}
	byName := map[string]corev1.Container{}
	for _, c := range append(orig.Spec.Containers, orig.Spec.InitContainers...) {
		byName[c.Name] = c
	}
	all := append(append([]corev1.Container{}, after.Spec.Containers...), after.Spec.InitContainers...)
	for _, c := range all {
		o, existed := byName[c.Name]
		if !existed {
			if c.Name != cfg.Proxy.Name {
				t.Errorf("unexpected new container %q", c.Name)
			}
			continue
		}
		added := len(c.Env) - len(o.Env)
		if added < 0 {
			t.Fatalf("container %q lost env entries", c.Name)
		}
		userTail, _ := json.Marshal(c.Env[added:])
		userOrig, _ := json.Marshal(o.Env)
		if len(o.Env) > 0 && !bytes.Equal(userTail, userOrig) {
			t.Errorf("container %q: user env changed or reordered:\n got %s\nwant %s", c.Name, userTail, userOrig)
		}
		for _, e := range c.Env[:added] {
			if strings.HasSuffix(e.Name, "_KEY") {
				if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil ||
					e.ValueFrom.SecretKeyRef.Name != cfg.TokenSecret || e.ValueFrom.SecretKeyRef.Key != TokenSecretKey {
					t.Errorf("container %q: %s is not a reference to the token Secret: %+v", c.Name, e.Name, e)
				}
			}
			for _, u := range o.Env {
				if u.Name == e.Name {
					t.Errorf("container %q: %s set although the user defined it", c.Name, e.Name)
				}
			}
		}
	}
	if len(after.Spec.EphemeralContainers) != len(orig.Spec.EphemeralContainers) {
		t.Errorf("ephemeral containers changed")
	}
	for i := range orig.Spec.EphemeralContainers {
		if len(after.Spec.EphemeralContainers[i].Env) != len(orig.Spec.EphemeralContainers[i].Env) {
			t.Errorf("ephemeral container %q got env", orig.Spec.EphemeralContainers[i].Name)
		}
	}
}
