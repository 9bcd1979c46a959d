package kube_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/utils/ptr"

	"github.com/tollgate-dev/tollgate/injector"
	"github.com/tollgate-dev/tollgate/sidecar"
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
			"value": map[string]any{"name": "other-sidecar", "image": "example.test/other:1",
				"securityContext": map[string]any{"allowPrivilegeEscalation": false, "capabilities": map[string]any{"drop": []string{"ALL"}}}}}})
		pt := admissionv1.PatchTypeJSONPatch
		resp.Patch, resp.PatchType = patch, &pt
	}
	review.Response, review.Request = resp, nil
	_ = json.NewEncoder(w).Encode(&review)
}

// pod is a function pod that the "restricted" Pod Security Standard admits.
func pod(ns, name, caseName string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"case": caseName}},
		Spec: corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](1000),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{Name: "app", Image: "example.test/fn:1", SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: ptr.To(false), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}}},
		},
	}
	if name == "" {
		p.GenerateName = caseName + "-"
	}
	return p
}

// injectorFor builds the real injector webhook as the chart configures it:
// the mutation flags are read from the rendered injector Deployment's args
// (the same flags `tollgate inject` takes), and the namespaces and envFrom
// ConfigMaps come from the API server, as in the cluster.
func injectorFor(t *testing.T, env *kube.Env, r *chart.Rendered) http.Handler {
	t.Helper()
	flags := injectorFlags(t, r, "tg-tollgate-injector")
	port, err := strconv.ParseUint(flags["proxy-port"], 10, 32)
	if err != nil {
		t.Fatalf("--proxy-port=%q: %v", flags["proxy-port"], err)
	}
	proxy, err := injector.NewProxy(flags["proxy-image"], sidecar.Options{Processor: flags["processor"], ListenPort: uint32(port)})
	if err != nil {
		t.Fatal(err)
	}
	proxy.PullPolicy = corev1.PullPolicy(flags["proxy-image-pull-policy"])
	if err := json.Unmarshal([]byte(flags["proxy-resources"]), &proxy.Resources); err != nil {
		t.Fatalf("--proxy-resources=%q: %v", flags["proxy-resources"], err)
	}
	m, err := injector.NewMutator(injector.Config{
		Proxy: proxy, SidecarMode: flags["sidecar-mode"], TokenSecret: flags["token-secret"],
		EnvFromPolicy: flags["env-from-policy"], OwnNamespace: chart.Namespace,
	}, injector.APIKeys{Client: env.Client}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	factory := informers.NewSharedInformerFactory(env.Client, 0)
	nsInformer := factory.Core().V1().Namespaces()
	lister := nsInformer.Lister()
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	factory.Start(stop)
	factory.WaitForCacheSync(stop)
	return injector.NewWebhook(m, injector.NamespaceLister{Lister: lister, Client: env.Client}, 0, nil)
}

// TestChartWebhookOnAPIServer installs the MutatingWebhookConfiguration
// rendered from the chart, pointed by URL at the real injector on a
// loopback server, and creates pods through the real API server: the
// chart's selectors and match conditions decide which creations reach the
// injector, the injector decides what changes, and the API server (with
// Pod Security "restricted" enforced where labelled) stores the result.
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

	account := map[string]string{"tollgate.dev/account": "acme"}
	for _, ns := range []struct {
		name        string
		labels      map[string]string
		annotations map[string]string
	}{
		{"fn", map[string]string{"tollgate.dev/inject": "enabled", "pod-security.kubernetes.io/enforce": "restricted"}, account},
		{"fn-loose", map[string]string{"tollgate.dev/inject": "enabled"}, account},
		{"fn-no-account", map[string]string{"tollgate.dev/inject": "enabled"}, nil},
		{"plain", nil, nil},
		{chart.Namespace, map[string]string{"tollgate.dev/inject": "enabled"}, account}, // labelled by mistake
		{"fn-disabled", map[string]string{"tollgate.dev/inject": "disabled"}, account},
	} {
		_, err := env.Client.CoreV1().Namespaces().Create(ctx(t), &corev1.Namespace{
			ObjectMeta: metav1.ObjectMeta{Name: ns.name, Labels: ns.labels, Annotations: ns.annotations}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	// A ConfigMap an app takes variables from: its keys are read from the API.
	if _, err := env.Client.CoreV1().ConfigMaps("fn").Create(ctx(t), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "openai-settings"},
		Data:       map[string]string{"OPENAI_BASE_URL": "https://openai.corp.example/v1"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	rec := &recorder{next: injectorFor(t, env, r)}
	hook := kube.ServeWebhook(t, rec)
	hook.PointAt(mwc)
	if err := env.InstallWebhook(ctx(t), mwc, pod("fn", "canary", "canary"), isInjected); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx(t), mwc.Name, metav1.DeleteOptions{})
	})

	pods := env.Client.CoreV1()
	created := map[string]*corev1.Pod{}
	create := func(p *corev1.Pod, dryRun bool) {
		t.Helper()
		opts := metav1.CreateOptions{}
		if dryRun {
			opts.DryRun = []string{metav1.DryRunAll}
		}
		got, err := pods.Pods(p.Namespace).Create(ctx(t), p, opts)
		if err != nil {
			t.Fatalf("create pod %s/%s: %v", p.Namespace, p.Name+p.GenerateName, err)
		}
		created[p.Labels["case"]] = got
	}

	create(pod("fn", "plain-pod", "in-opted-in-ns"), false)
	create(pod("fn", "", "generate-name"), false)
	create(pod("fn", "dry", "dry-run"), true)
	userKey := pod("fn", "user-key", "user-key")
	userKey.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "OPENAI_API_KEY", Value: "sk-users-own"}}
	create(userKey, false)
	fromCM := pod("fn", "from-configmap", "envfrom-configmap")
	fromCM.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: "openai-settings"}}}}
	create(fromCM, false)
	create(pod("fn-no-account", "p", "no-account"), false)
	create(pod("plain", "p", "ns-not-opted-in"), false)
	create(pod("fn-disabled", "p", "ns-label-other-value"), false)
	create(pod(chart.Namespace, "p", "release-namespace"), false)
	optOut := pod("fn", "opted-out", "pod-opted-out")
	optOut.Labels["tollgate.dev/inject"] = "false"
	create(optOut, false)
	optOutAnn := pod("fn", "opted-out-ann", "pod-opted-out-annotation")
	optOutAnn.Annotations = map[string]string{"tollgate.dev/inject": "false"}
	create(optOutAnn, false)
	hostNet := pod("fn-loose", "host-net", "host-network")
	hostNet.Spec.HostNetwork = true
	create(hostNet, false)

	// A Deployment is stored but, with no controller-manager here, never
	// gets a ReplicaSet or pods; the webhook only matches pods, so the
	// create does not reach it. Its pods are what the ReplicaSet
	// controller would create: generateName and a controller reference.
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
	if got, _ := pods.Pods("fn").List(ctx(t), metav1.ListOptions{LabelSelector: "case=deployment"}); len(got.Items) != 0 {
		t.Errorf("the Deployment got pods: something acts on Deployments here after all")
	}
	rsPod := pod("fn", "", "deployment")
	rsPod.GenerateName = "fn-dep-5d4f8b9c7-"
	rsPod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "fn-dep-5d4f8b9c7",
		UID: "00000000-0000-0000-0000-000000000001", Controller: ptr.To(true)}}
	create(rsPod, false)

	// Pod Security "restricted" is really enforced in fn (after mutation),
	// so every injected pod admitted there, sidecar included, complies.
	loose := pod("fn", "not-restricted", "not-restricted")
	loose.Spec.SecurityContext, loose.Spec.Containers[0].SecurityContext = nil, nil
	if _, err := pods.Pods("fn").Create(ctx(t), loose, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); !apierrors.IsForbidden(err) {
		t.Errorf("a pod breaking the restricted profile was admitted in fn: %v", err)
	}

	tests := []struct {
		caseName string
		calls    int
		check    func(t *testing.T, c []call, p *corev1.Pod)
	}{
		{"in-opted-in-ns", 1, func(t *testing.T, c []call, p *corev1.Pod) {
			if c[0].Path != "/inject" || c[0].Name != "plain-pod" || c[0].DryRun {
				t.Errorf("call = %+v", c[0])
			}
			checkInjected(t, p, []string{"openai", "anthropic", "gemini"})
		}},
		{"generate-name", 1, func(t *testing.T, c []call, p *corev1.Pod) {
			if c[0].Name != "" || c[0].GenerateName != "generate-name-" {
				t.Errorf("generateName pod: request name %q, generateName %q (want empty, set)", c[0].Name, c[0].GenerateName)
			}
			checkInjected(t, p, []string{"openai", "anthropic", "gemini"})
		}},
		{"dry-run", 1, func(t *testing.T, c []call, p *corev1.Pod) {
			if !c[0].DryRun {
				t.Errorf("dry-run create reached the webhook without dryRun=true")
			}
			checkInjected(t, p, []string{"openai", "anthropic", "gemini"})
			if _, err := pods.Pods("fn").Get(ctx(t), "dry", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("dry-run pod was stored: %v", err)
			}
		}},
		{"deployment", 1, func(t *testing.T, c []call, p *corev1.Pod) {
			if c[0].Name != "" || c[0].GenerateName != "fn-dep-5d4f8b9c7-" {
				t.Errorf("ReplicaSet-style pod: %+v", c[0])
			}
			checkInjected(t, p, []string{"openai", "anthropic", "gemini"})
		}},
		{"user-key", 1, func(t *testing.T, _ []call, p *corev1.Pod) {
			checkInjected(t, p, []string{"anthropic", "gemini"})
			if v := envValues(p.Spec.Containers[0], "OPENAI_API_KEY"); !slices.Equal(v, []string{"sk-users-own"}) {
				t.Errorf("user's OPENAI_API_KEY became %v", v)
			}
		}},
		{"envfrom-configmap", 1, func(t *testing.T, _ []call, p *corev1.Pod) {
			// OPENAI_BASE_URL comes from the ConfigMap: the OpenAI pair is the user's.
			checkInjected(t, p, []string{"anthropic", "gemini"})
		}},
		{"no-account", 1, func(t *testing.T, _ []call, p *corev1.Pod) {
			if st := p.Annotations["tollgate.dev/status"]; !strings.HasPrefix(st, "skipped: ") || len(p.Spec.InitContainers) != 0 {
				t.Errorf("pod of a namespace without an account: status %q, init containers %d", st, len(p.Spec.InitContainers))
			}
		}},
		{"pod-opted-out-annotation", 1, checkUntouched},
		{"ns-not-opted-in", 0, checkUntouched},
		{"ns-label-other-value", 0, checkUntouched},
		{"release-namespace", 0, checkUntouched},
		{"pod-opted-out", 0, checkUntouched},
		{"host-network", 0, checkUntouched},
	}
	for _, tt := range tests {
		t.Run(tt.caseName, func(t *testing.T) {
			got := rec.of(tt.caseName)
			if len(got) != tt.calls {
				t.Fatalf("webhook called %d times, want %d: %+v", len(got), tt.calls, got)
			}
			tt.check(t, got, created[tt.caseName])
		})
	}

	t.Run("reinvocation", func(t *testing.T) {
		// A second webhook, ordered after ours by name, adds a container;
		// the API server calls ours again (IfNeeded) with it. The injector
		// leaves its own output alone: one proxy, variables once, none on
		// the other injector's container.
		other := &admissionregistrationv1.MutatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: "zz-other-injector"},
			Webhooks: []admissionregistrationv1.MutatingWebhook{{
				Name: "other.example.test", AdmissionReviewVersions: []string{"v1"},
				SideEffects: ptr.To(admissionregistrationv1.SideEffectClassNone),
				ClientConfig: admissionregistrationv1.WebhookClientConfig{
					Service: &admissionregistrationv1.ServiceReference{Path: ptr.To("/other")}},
				Rules: []admissionregistrationv1.RuleWithOperations{{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
				}},
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tollgate.dev/inject": "enabled"}},
			}},
		}
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
			t.Fatalf("want our webhook called twice, second time with the other injector's container; got %+v", got)
		}
		p := created["reinvoked"]
		checkInjected(t, p, []string{"openai", "anthropic", "gemini"})
		if n := len(envValues(p.Spec.Containers[0], "OPENAI_API_KEY")); n != 1 {
			t.Errorf("OPENAI_API_KEY set %d times on the app", n)
		}
		if c := p.Spec.Containers[1]; c.Name != "other-sidecar" || len(c.Env) != 0 {
			t.Errorf("the other injector's container got variables: %+v", c)
		}
	})
}

func isInjected(p *corev1.Pod) bool { return p.Annotations["tollgate.dev/status"] == "injected" }

// checkInjected: the proxy is the first init container (native sidecar),
// the app's first variables are the gateway's for the providers listed
// (keys by reference to the token Secret, never a value, base URLs on the
// proxy), and kubectl's default container is the app.
func checkInjected(t *testing.T, p *corev1.Pod, providers []string) {
	t.Helper()
	if p == nil || !isInjected(p) {
		t.Fatalf("pod not injected: %+v", p)
	}
	if len(p.Spec.InitContainers) == 0 || p.Spec.InitContainers[0].Name != "tollgate-proxy" ||
		p.Spec.InitContainers[0].RestartPolicy == nil || *p.Spec.InitContainers[0].RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("no native tollgate-proxy sidecar first: %+v", p.Spec.InitContainers)
	} else if proxy := p.Spec.InitContainers[0]; proxy.Image != "docker.io/envoyproxy/envoy:v1.40.0" ||
		!strings.Contains(strings.Join(proxy.Args, " "), "tg-tollgate-processor.tollgate-system.svc") {
		t.Errorf("proxy image %q or its processor address is not the chart's", proxy.Image)
	}
	if p.Annotations["kubectl.kubernetes.io/default-container"] != "app" {
		t.Errorf("default container = %q", p.Annotations["kubectl.kubernetes.io/default-container"])
	}
	app := p.Spec.Containers[0]
	want := map[string]string{"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY"}
	for prov, key := range want {
		has := false
		for _, e := range app.Env {
			if e.Name != key {
				continue
			}
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				has = true
				if ref := e.ValueFrom.SecretKeyRef; ref.Name != "tollgate-gateway-token" || ref.Key != "token" {
					t.Errorf("%s refers to %s/%s", key, ref.Name, ref.Key)
				}
			}
		}
		if has != slices.Contains(providers, prov) {
			t.Errorf("%s from the token Secret: %v, want %v (env %v)", key, has, slices.Contains(providers, prov), names(app.Env))
		}
	}
	// Ours come first, so a user's $(AI_GATEWAY_BASE_URL) reference expands.
	if len(app.Env) == 0 || !(app.Env[0].ValueFrom != nil || strings.HasPrefix(app.Env[0].Value, "http://127.0.0.1:15080")) {
		t.Errorf("the gateway's variables are not first: %v", names(app.Env))
	}
	for _, e := range app.Env {
		if strings.HasSuffix(e.Name, "_BASE_URL") && e.ValueFrom == nil && !strings.HasPrefix(e.Value, "http://127.0.0.1:15080") &&
			e.Value != "https://openai.corp.example/v1" {
			t.Errorf("%s=%q does not point at the proxy", e.Name, e.Value)
		}
	}
}

// checkUntouched: the pod is stored as it was sent.
func checkUntouched(t *testing.T, _ []call, p *corev1.Pod) {
	t.Helper()
	if _, ok := p.Annotations["tollgate.dev/status"]; ok || len(p.Spec.InitContainers) != 0 || len(p.Spec.Containers[0].Env) != 0 {
		t.Errorf("pod changed: annotations %v, init containers %d, env %v", p.Annotations, len(p.Spec.InitContainers), names(p.Spec.Containers[0].Env))
	}
}

func envValues(c corev1.Container, name string) []string {
	var v []string
	for _, e := range c.Env {
		if e.Name == name {
			v = append(v, e.Value)
		}
	}
	return v
}

func names(env []corev1.EnvVar) []string {
	var n []string
	for _, e := range env {
		n = append(n, e.Name)
	}
	return n
}

// injectorFlags are the --name=value flags the chart gives the injector
// Deployment's container.
func injectorFlags(t *testing.T, r *chart.Rendered, deployment string) map[string]string {
	t.Helper()
	d, err := chart.One[*appsv1.Deployment](r, "Deployment", deployment)
	if err != nil {
		t.Fatal(err)
	}
	flags := map[string]string{}
	for _, a := range d.Spec.Template.Spec.Containers[0].Args {
		if k, v, ok := strings.Cut(strings.TrimPrefix(a, "--"), "="); ok {
			flags[k] = v
		}
	}
	return flags
}
