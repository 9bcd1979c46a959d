package injector

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func envNames(c corev1.Container) []string {
	var out []string
	for _, e := range c.Env {
		out = append(out, e.Name)
	}
	return out
}

func TestMutateTargets(t *testing.T) {
	m, err := NewMutator(testConfig(), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ns := Namespace{Name: "fn", Labels: map[string]string{LabelInject: ValueEnabled, KeyAccount: "acme"}}
	all := []string{"AI_GATEWAY_KEY", "AI_GATEWAY_BASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL"}
	tests := []struct {
		name        string
		annotations map[string]string
		want        map[string][]string // container → env names after
	}{
		{"every app container", nil, map[string][]string{"a": all, "b": all, "init": nil, "daprd": nil}},
		{"listed containers only", map[string]string{AnnotationEnvContainers: "b, nope"}, map[string][]string{"a": nil, "b": all, "init": nil}},
		{"init containers on request", map[string]string{AnnotationEnvInitContainers: "true"}, map[string][]string{"a": all, "init": all, "mesh": nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "fn", Annotations: tt.annotations},
				Spec: corev1.PodSpec{
					InitContainers: []corev1.Container{
						{Name: "init"},
						{Name: "mesh", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways)},
					},
					Containers: []corev1.Container{{Name: "daprd"}, {Name: "a"}, {Name: "b"}},
				},
			}
			res := m.Mutate(context.Background(), Request{Pod: pod, Namespace: ns})
			if !res.Injected {
				t.Fatalf("not injected: %s", res.Reason)
			}
			out := res.Pod
			for _, c := range append(out.Spec.Containers, out.Spec.InitContainers...) {
				if want, ok := tt.want[c.Name]; ok && !slices.Equal(envNames(c), want) {
					t.Errorf("container %s env %q, want %q", c.Name, envNames(c), want)
				}
			}
			if out.Spec.InitContainers[0].Name != ProxyName {
				t.Errorf("the native sidecar is not the first init container: %q", out.Spec.InitContainers[0].Name)
			}
			// The first app container, never another mesh's sidecar.
			if got := out.Annotations[AnnotationDefaultContainer]; got != "a" {
				t.Errorf("default container %q, want a", got)
			}
			if len(pod.Spec.Containers[1].Env) != 0 || len(pod.Spec.InitContainers) != 2 {
				t.Error("Mutate modified its input")
			}
		})
	}
}

// TestMutateManual: asked by hand, the namespace label is not needed, but
// the pod's own opt-out holds.
func TestMutateManual(t *testing.T) {
	m, err := NewMutator(testConfig(), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ns := Namespace{Name: "anywhere", Labels: map[string]string{KeyAccount: "acme"}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}
	if res := m.Mutate(context.Background(), Request{Pod: pod, Namespace: ns}); res.Injected {
		t.Error("injected in a namespace that did not opt in")
	}
	if res := m.Mutate(context.Background(), Request{Pod: pod, Namespace: ns, Manual: true}); !res.Injected {
		t.Errorf("manual injection refused: %s", res.Reason)
	}
	pod.Annotations = map[string]string{LabelInject: "false"}
	if res := m.Mutate(context.Background(), Request{Pod: pod, Namespace: ns, Manual: true}); res.Injected || res.Pod != pod {
		t.Error("manual injection ignored the pod's opt-out")
	}
}

// FuzzWebhook feeds arbitrary pods through the handler: it never panics,
// and whatever it patches decodes strictly into a Pod that a second pass
// leaves alone, with every user env entry kept.
func FuzzWebhook(f *testing.F) {
	for _, file := range []string{"no-env.yaml", "several-containers.yaml", "init-and-ephemeral.yaml", "gateway-defined.yaml", "envfrom-configmap.yaml", "pod-level-resources.yaml", "istio.yaml", "job.yaml"} {
		pod, err := readPodFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(pod)
	}
	f.Add([]byte(`{"metadata":{"annotations":{"tollgate.dev/status":"injected"}},"spec":{"containers":[{"name":"tollgate-proxy"}]}}`))
	f.Add([]byte(`{"spec":{"containers":null}}`))
	m, err := NewMutator(testConfig(), nil, fakeAccounts{"acme": true}, nil)
	if err != nil {
		f.Fatal(err)
	}
	h := NewWebhook(m, staticNamespaces{Name: "fn", Labels: map[string]string{LabelInject: ValueEnabled, KeyAccount: "acme"}}, 0, nil)
	call := func(t *testing.T, pod []byte) (*admissionv1.AdmissionResponse, bool) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, WebhookPath, bytes.NewReader(admissionReview("u", "fn", pod, false)))
		req.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			return nil, false
		}
		var out admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
			t.Fatalf("200 without a review: %v %s", err, rec.Body.Bytes())
		}
		return out.Response, true
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		// The API server sends a pod as its Go type encodes it (metadata
		// and spec always present), so the fuzzed pod goes through it too.
		var typed corev1.Pod
		if json.Unmarshal(in, &typed) != nil {
			return
		}
		pod, err := json.Marshal(&typed)
		if err != nil {
			t.Fatal(err)
		}
		resp, ok := call(t, pod)
		if !ok {
			return
		}
		patched := applyPatch(t, pod, resp)
		var before, after corev1.Pod
		if json.Unmarshal(pod, &before) != nil {
			t.Fatalf("a pod the handler accepted does not decode: %s", pod)
		}
		strictDecode(t, patched, &after)
		for i, c := range before.Spec.Containers {
			if i >= len(after.Spec.Containers) {
				t.Fatalf("containers lost")
			}
			got := after.Spec.Containers[i].Env
			if !slices.EqualFunc(got[len(got)-len(c.Env):], c.Env, func(a, b corev1.EnvVar) bool { return a.Name == b.Name && a.Value == b.Value }) {
				t.Fatalf("container %d: user env changed", i)
			}
		}
		again, ok := call(t, patched)
		if !ok || len(again.Patch) != 0 {
			t.Fatalf("second pass: ok=%v patch %s", ok, againPatch(again))
		}
	})
}

func againPatch(r *admissionv1.AdmissionResponse) []byte {
	if r == nil {
		return nil
	}
	return r.Patch
}

type staticNamespaces Namespace

func (s staticNamespaces) Namespace(context.Context, string) (Namespace, error) {
	return Namespace(s), nil
}

// TestWindowsPods: a pod bound to Windows nodes is skipped whether it says
// so in spec.os or only by the node selector older manifests use: the
// Linux-only Envoy image would never start there, and the native proxy
// would hold the app back with it.
func TestWindowsPods(t *testing.T) {
	tests := []struct {
		name     string
		os       *corev1.PodOS
		selector map[string]string
		skipped  bool
	}{
		{"spec.os windows", &corev1.PodOS{Name: corev1.Windows}, nil, true},
		{"node selector windows", nil, map[string]string{corev1.LabelOSStable: "windows"}, true},
		{"node selector linux", nil, map[string]string{corev1.LabelOSStable: "linux"}, false},
		{"spec.os linux", &corev1.PodOS{Name: corev1.Linux}, nil, false},
		{"neither", nil, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "fn"},
				Spec:       corev1.PodSpec{OS: tt.os, NodeSelector: tt.selector, Containers: []corev1.Container{{Name: "app"}}},
			}
			res := mutate(t, testConfig(), pod)
			if res.Injected == tt.skipped {
				t.Errorf("injected %v (reason %q), want skipped %v", res.Injected, res.Reason, tt.skipped)
			}
			if tt.skipped && res.Pod.Annotations[AnnotationStatus] != "skipped: Windows pod: the proxy image is Linux only" {
				t.Errorf("status %q", res.Pod.Annotations[AnnotationStatus])
			}
		})
	}
}
