package kube_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tollgate-dev/tollgate/test/chart"
	"github.com/tollgate-dev/tollgate/test/kube"
)

// call is one admission request as the webhook received it.
type call struct {
	Path, Namespace, Name, GenerateName, Case string
	DryRun                                    bool
	Containers                                []string
}

// recorder notes every AdmissionReview it gets, then lets next answer
// (or allows the pod unchanged when next is nil).
type recorder struct {
	mu    sync.Mutex
	calls []call
	next  http.Handler
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var review admissionv1.AdmissionReview
	var pod corev1.Pod
	if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
		http.Error(w, "not an AdmissionReview", http.StatusBadRequest)
		return
	}
	if err := json.Unmarshal(review.Request.Object.Raw, &pod); err != nil {
		http.Error(w, "not a pod", http.StatusBadRequest)
		return
	}
	c := call{Path: req.URL.Path, Namespace: review.Request.Namespace, Name: review.Request.Name,
		GenerateName: pod.GenerateName, Case: pod.Labels["case"], DryRun: review.Request.DryRun != nil && *review.Request.DryRun}
	for _, ct := range pod.Spec.Containers {
		c.Containers = append(c.Containers, ct.Name)
	}
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
	if r.next != nil {
		req.Body = io.NopCloser(bytes.NewReader(body))
		r.next.ServeHTTP(w, req)
		return
	}
	review.Response = &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
	review.Request = nil
	_ = json.NewEncoder(w).Encode(&review)
}

// of returns the calls for pods labelled case=name.
func (r *recorder) of(name string) []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []call
	for _, c := range r.calls {
		if c.Case == name {
			out = append(out, c)
		}
	}
	return out
}

// addSidecar is a second, test-only mutating webhook: it appends a
// container, as another mesh's injector would, which makes the API server
// re-invoke webhooks with reinvocationPolicy IfNeeded.
func addSidecar(w http.ResponseWriter, req *http.Request) {
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(req.Body).Decode(&review); err != nil || review.Request == nil {
		http.Error(w, "not an AdmissionReview", http.StatusBadRequest)
		return
	}
	var pod corev1.Pod
	_ = json.Unmarshal(review.Request.Object.Raw, &pod)
	resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
	if !slices.ContainsFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == "other-sidecar" }) {
		patch, _ := json.Marshal([]map[string]any{{"op": "add", "path": "/spec/containers/-",
			"value": map[string]any{"name": "other-sidecar", "image": "example.test/other:1"}}})
		pt := admissionv1.PatchTypeJSONPatch
		resp.Patch, resp.PatchType = patch, &pt
	}
	review.Response, review.Request = resp, nil
	_ = json.NewEncoder(w).Encode(&review)
}

func pod(ns, name, caseName string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"case": caseName}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.test/fn:1"}}},
	}
	if name == "" {
		p.GenerateName = caseName + "-"
	}
	return p
}

// TestChartWebhookOnAPIServer installs the MutatingWebhookConfiguration
// rendered from the chart (pointed at a loopback server by URL) and checks
// which pod creations the real API server sends to it: the chart's
// selectors and match conditions decide that, not the webhook.
func TestChartWebhookOnAPIServer(t *testing.T) {
	env := kube.Shared(t)
	r, err := chart.Render(nil)
	if err != nil {
		t.Fatal(err)
	}
	mwc, err := chart.One[*admissionregistrationv1.MutatingWebhookConfiguration](r, "MutatingWebhookConfiguration", "")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	hook := kube.ServeWebhook(t, rec)
	hook.PointAt(mwc)

	on := map[string]string{"tollgate.dev/inject": "enabled"}
	createNamespace(t, env.Client, "fn", on)
	createNamespace(t, env.Client, "plain", nil)
	createNamespace(t, env.Client, chart.Namespace, on) // the release namespace, labelled by mistake
	createNamespace(t, env.Client, "fn-disabled", map[string]string{"tollgate.dev/inject": "disabled"})

	canary := pod("fn", "canary", "canary")
	if err := env.InstallWebhook(ctx(t), mwc, canary, func(*corev1.Pod) bool { return len(rec.of("canary")) > 0 }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx(t), mwc.Name, metav1.DeleteOptions{})
	})

	pods := env.Client.CoreV1()
	create := func(p *corev1.Pod, dryRun bool) {
		t.Helper()
		opts := metav1.CreateOptions{}
		if dryRun {
			opts.DryRun = []string{metav1.DryRunAll}
		}
		if _, err := pods.Pods(p.Namespace).Create(ctx(t), p, opts); err != nil {
			t.Fatalf("create pod %s/%s: %v", p.Namespace, p.Name+p.GenerateName, err)
		}
	}

	create(pod("fn", "plain-pod", "in-opted-in-ns"), false)
	create(pod("fn", "", "generate-name"), false)
	create(pod("fn", "dry", "dry-run"), true)
	create(pod("plain", "p", "ns-not-opted-in"), false)
	create(pod("fn-disabled", "p", "ns-label-other-value"), false)
	create(pod(chart.Namespace, "p", "release-namespace"), false)
	optOut := pod("fn", "opted-out", "pod-opted-out")
	optOut.Labels["tollgate.dev/inject"] = "false"
	create(optOut, false)
	hostNet := pod("fn", "host-net", "host-network")
	hostNet.Spec.HostNetwork = true
	create(hostNet, false)

	// A Deployment is stored but, with no controller-manager here, never
	// gets a ReplicaSet or pods; the webhook only matches pods, so the
	// create does not reach it. Its pods are what the ReplicaSet
	// controller would create: generateName and an owner reference.
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "fn-dep", Namespace: "fn"},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"case": "deployment"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"case": "deployment"}},
				Spec: pod("", "", "").Spec},
		},
	}
	if _, err := env.Client.AppsV1().Deployments("fn").Create(ctx(t), dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rsPod := pod("fn", "", "deployment")
	rsPod.GenerateName = "fn-dep-5d4f8b9c7-"
	rsPod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "fn-dep-5d4f8b9c7",
		UID: "00000000-0000-0000-0000-000000000001", Controller: new(bool)}}
	*rsPod.OwnerReferences[0].Controller = true
	create(rsPod, false)

	tests := []struct {
		caseName string
		calls    int
		check    func(t *testing.T, c []call)
	}{
		{"in-opted-in-ns", 1, func(t *testing.T, c []call) {
			if c[0].Path != "/inject" || c[0].Name != "plain-pod" || c[0].DryRun {
				t.Errorf("call = %+v", c[0])
			}
		}},
		{"generate-name", 1, func(t *testing.T, c []call) {
			if c[0].Name != "" || c[0].GenerateName != "generate-name-" {
				t.Errorf("generateName pod: request name %q, generateName %q (want empty, set)", c[0].Name, c[0].GenerateName)
			}
		}},
		{"dry-run", 1, func(t *testing.T, c []call) {
			if !c[0].DryRun {
				t.Errorf("dry-run create reached the webhook without dryRun=true")
			}
		}},
		{"deployment", 1, func(t *testing.T, c []call) {
			if c[0].Name != "" || c[0].GenerateName != "fn-dep-5d4f8b9c7-" {
				t.Errorf("ReplicaSet-style pod: %+v", c[0])
			}
		}},
		{"ns-not-opted-in", 0, nil},
		{"ns-label-other-value", 0, nil},
		{"release-namespace", 0, nil},
		{"pod-opted-out", 0, nil},
		{"host-network", 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.caseName, func(t *testing.T) {
			got := rec.of(tt.caseName)
			if len(got) != tt.calls {
				t.Fatalf("webhook called %d times, want %d: %+v", len(got), tt.calls, got)
			}
			if tt.check != nil {
				tt.check(t, got)
			}
		})
	}

	// Reinvocation: a second webhook, ordered after ours by name, adds a
	// container; the API server calls ours again (IfNeeded) with it.
	other := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "zz-other-injector"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: "other.example.test", AdmissionReviewVersions: []string{"v1"},
			SideEffects: new(admissionregistrationv1.SideEffectClass),
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				Service: &admissionregistrationv1.ServiceReference{Path: new(string)}},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: on},
		}},
	}
	*other.Webhooks[0].SideEffects = admissionregistrationv1.SideEffectClassNone
	*other.Webhooks[0].ClientConfig.Service.Path = "/other"
	otherHook := kube.ServeWebhook(t, http.HandlerFunc(addSidecar))
	otherHook.PointAt(other)
	if err := env.InstallWebhook(ctx(t), other, pod("fn", "canary2", "canary2"), func(p *corev1.Pod) bool { return len(p.Spec.Containers) == 2 }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx(t), other.Name, metav1.DeleteOptions{})
	})
	create(pod("fn", "reinvoked", "reinvoked"), false)
	got := rec.of("reinvoked")
	if len(got) != 2 || !slices.Equal(got[0].Containers, []string{"app"}) || !slices.Equal(got[1].Containers, []string{"app", "other-sidecar"}) {
		t.Errorf("want our webhook called twice, second time with the other injector's container; got %+v", got)
	}
}
