package injector

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	resourcehelper "k8s.io/component-helpers/resource"
	"k8s.io/utils/ptr"
)

func testNamespace() Namespace {
	return Namespace{Name: "fn", Labels: map[string]string{LabelInject: ValueEnabled, KeyAccount: "acme"}}
}

func mutate(t *testing.T, cfg Config, pod *corev1.Pod) Result {
	t.Helper()
	m, err := NewMutator(cfg, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return m.Mutate(context.Background(), Request{Pod: pod, Namespace: testNamespace()})
}

// expandEnv resolves a container's env the way the kubelet does, as
// documented on EnvVar.Value: $(NAME) expands against entries defined
// before it, an unresolvable reference stays as written, $$ is a literal $.
// A Secret reference stands for its value as "<secret>".
func expandEnv(env []corev1.EnvVar) map[string]string {
	defined := map[string]string{}
	for _, e := range env {
		v := e.Value
		if e.ValueFrom != nil {
			v = "<secret>"
		}
		defined[e.Name] = expandRefs(v, defined)
	}
	return defined
}

func expandRefs(s string, defined map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString("$(")
				i++
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := defined[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// TestEnvReferencesExpand: a user's $(AI_GATEWAY_BASE_URL) and
// $(OPENAI_BASE_URL) expand to the proxy because our entries come first;
// appended instead, the same references would stay unexpanded.
func TestEnvReferencesExpand(t *testing.T) {
	srv := startWebhook(t, testConfig(), false)
	pod := readPod(t, "env-references.yaml")
	var out corev1.Pod
	strictDecode(t, applyPatch(t, pod, srv.call(t, admissionReview("u-refs", "fn", pod, false))), &out)
	env := out.Spec.Containers[0].Env

	want := map[string]string{
		"CHAT_URL":   "http://127.0.0.1:15080/openai/v1/chat/completions",
		"HEALTH_URL": "http://127.0.0.1:15080/healthz",
		"LITERAL":    "$(AI_GATEWAY_BASE_URL)", // escaped by the user: stays literal
		"LATER":      "$(DEFINED_BELOW)",       // defined after it: not expanded
	}
	got := expandEnv(env)
	for name, v := range want {
		if got[name] != v {
			t.Errorf("%s = %q, want %q", name, got[name], v)
		}
	}

	// The same entries with ours appended: the references stay unexpanded,
	// which is why they go first.
	var users, ours []corev1.EnvVar
	for _, e := range env {
		if strings.HasPrefix(e.Name, "AI_GATEWAY_") || strings.HasPrefix(e.Name, "OPENAI_") ||
			strings.HasPrefix(e.Name, "ANTHROPIC_") || strings.HasPrefix(e.Name, "GEMINI_") || strings.HasPrefix(e.Name, "GOOGLE_") {
			ours = append(ours, e)
		} else {
			users = append(users, e)
		}
	}
	if appended := expandEnv(append(users, ours...)); appended["CHAT_URL"] != "$(OPENAI_BASE_URL)/chat/completions" {
		t.Errorf("the expansion model does not depend on order: CHAT_URL = %q", appended["CHAT_URL"])
	}
}

// TestPodLevelResources: with pod-level resources set, the injected pod
// still satisfies the API server's rules (pod requests ≥ the containers'
// aggregate requests, as the kubelet's own helper computes it with native
// sidecars; each container's limit ≤ the pod's; pod requests ≤ limits),
// and the app keeps the budget its owner gave it.
func TestPodLevelResources(t *testing.T) {
	q := resource.MustParse
	list := func(kv ...string) corev1.ResourceList {
		l := corev1.ResourceList{}
		for i := 0; i < len(kv); i += 2 {
			l[corev1.ResourceName(kv[i])] = q(kv[i+1])
		}
		return l
	}
	requestsOnly := corev1.ResourceRequirements{Requests: list("cpu", "50m", "memory", "64Mi")}
	tests := []struct {
		name  string
		mode  string
		proxy *corev1.ResourceRequirements // nil: the defaults
		pod   corev1.ResourceRequirements
		app   corev1.ResourceRequirements
	}{
		{name: "requests and limits, app takes all", pod: corev1.ResourceRequirements{Requests: list("cpu", "500m", "memory", "256Mi"), Limits: list("cpu", "1", "memory", "512Mi")},
			app: corev1.ResourceRequirements{Requests: list("cpu", "500m", "memory", "256Mi"), Limits: list("memory", "512Mi")}},
		{name: "requests only", pod: corev1.ResourceRequirements{Requests: list("cpu", "300m")},
			app: corev1.ResourceRequirements{Requests: list("cpu", "300m")}},
		{name: "limits only, app limit equals pod limit", pod: corev1.ResourceRequirements{Limits: list("memory", "1Gi")},
			app: corev1.ResourceRequirements{Limits: list("memory", "1Gi")}},
		{name: "container mode", mode: SidecarContainer, pod: corev1.ResourceRequirements{Requests: list("memory", "128Mi"), Limits: list("memory", "128Mi")},
			app: corev1.ResourceRequirements{Requests: list("memory", "128Mi"), Limits: list("memory", "128Mi")}},
		{name: "proxy without limits", proxy: &requestsOnly, pod: corev1.ResourceRequirements{Requests: list("cpu", "1", "memory", "1Gi"), Limits: list("cpu", "1", "memory", "1Gi")},
			app: corev1.ResourceRequirements{Requests: list("cpu", "1", "memory", "1Gi")}},
		{name: "decimal memory units", pod: corev1.ResourceRequirements{Requests: list("memory", "200M"), Limits: list("memory", "300M")},
			app: corev1.ResourceRequirements{Requests: list("memory", "200M")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			if tt.mode != "" {
				cfg.SidecarMode = tt.mode
			}
			if tt.proxy != nil {
				cfg.Proxy.Resources = *tt.proxy
			}
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "fn"},
				Spec: corev1.PodSpec{
					Resources:  tt.pod.DeepCopy(),
					Containers: []corev1.Container{{Name: "app", Resources: tt.app}},
				},
			}
			if errs := podResourceErrors(pod); len(errs) != 0 {
				t.Fatalf("the test pod is invalid before injection: %v", errs)
			}
			res := mutate(t, cfg, pod)
			if !res.Injected {
				t.Fatalf("not injected: %s", res.Reason)
			}
			if errs := podResourceErrors(res.Pod); len(errs) != 0 {
				t.Errorf("injected pod breaks the pod-level resource rules: %v", errs)
			}
			// Without the adjustment the same pod would be refused (the
			// cases are tight), so this test can tell.
			unadjusted := res.Pod.DeepCopy()
			unadjusted.Spec.Resources = tt.pod.DeepCopy()
			if len(podResourceErrors(unadjusted)) == 0 {
				t.Errorf("the case is not tight: the pod would be valid without growing its budget")
			}
			// The app's share: pod-level budget minus the proxy's is what
			// the user set.
			proxyReqs := resourcehelper.AggregateContainerRequests(&corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{*defaulted(cfg.Proxy.container(false))}}}, resourcehelper.PodResourcesOptions{})
			for name, before := range tt.pod.Requests {
				after := res.Pod.Spec.Resources.Requests[name]
				after.Sub(proxyReqs[name])
				if after.Cmp(before) != 0 {
					t.Errorf("app's %s request share %s, want %s", name, after.String(), before.String())
				}
			}
			if pod.Spec.Resources.Requests.Cpu().Cmp(*tt.pod.Requests.Cpu()) != 0 || pod.Spec.Resources.Limits.Memory().Cmp(*tt.pod.Limits.Memory()) != 0 {
				t.Error("Mutate modified its input's resources")
			}
		})
	}

	t.Run("no pod-level resources: none added", func(t *testing.T) {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}
		if res := mutate(t, testConfig(), pod); res.Pod.Spec.Resources != nil {
			t.Errorf("pod-level resources appeared: %+v", res.Pod.Spec.Resources)
		}
	})
}

// defaulted applies the API server's defaulting of a container's missing
// requests from its limits.
func defaulted(c corev1.Container) *corev1.Container {
	c = *c.DeepCopy()
	for name, l := range c.Resources.Limits {
		if _, ok := c.Resources.Requests[name]; !ok {
			if c.Resources.Requests == nil {
				c.Resources.Requests = corev1.ResourceList{}
			}
			c.Resources.Requests[name] = l
		}
	}
	return &c
}

// podResourceErrors checks the API server's pod-level resource rules
// (ValidatePodSpec's consistency checks, after the API server's
// defaulting), with the aggregate computed by k8s.io/component-helpers as
// the API server does.
func podResourceErrors(pod *corev1.Pod) []string {
	spec := pod.Spec.DeepCopy()
	for i := range spec.Containers {
		spec.Containers[i] = *defaulted(spec.Containers[i])
	}
	for i := range spec.InitContainers {
		spec.InitContainers[i] = *defaulted(spec.InitContainers[i])
	}
	pr := spec.Resources
	var errs []string
	aggr := resourcehelper.AggregateContainerRequests(&corev1.Pod{Spec: *spec}, resourcehelper.PodResourcesOptions{})
	// Pod-level requests the pod does not set are defaulted (since 1.37
	// after the admission webhooks, PodLevelResourcesFixDefaulting) to the
	// containers' aggregate, else to the pod-level limit.
	if len(pr.Limits) > 0 {
		if pr.Requests == nil {
			pr.Requests = corev1.ResourceList{}
		}
		for name, sum := range aggr {
			if _, ok := pr.Requests[name]; !ok && resourcehelper.IsSupportedPodLevelResource(name) {
				pr.Requests[name] = sum
			}
		}
		for name, l := range pr.Limits {
			if _, ok := pr.Requests[name]; !ok {
				pr.Requests[name] = l
			}
		}
	}
	for name, sum := range aggr {
		if req, ok := pr.Requests[name]; ok && sum.Cmp(req) > 0 {
			errs = append(errs, fmt.Sprintf("requests.%s %s < aggregate %s", name, req.String(), sum.String()))
		}
	}
	for _, c := range spec.Containers {
		for name, l := range c.Resources.Limits {
			if pl, ok := pr.Limits[name]; ok && l.Cmp(pl) > 0 {
				errs = append(errs, fmt.Sprintf("container %s limits.%s %s > pod limit %s", c.Name, name, l.String(), pl.String()))
			}
		}
	}
	for name, req := range pr.Requests {
		if l, ok := pr.Limits[name]; ok && req.Cmp(l) > 0 {
			errs = append(errs, fmt.Sprintf("pod requests.%s %s > limits %s", name, req.String(), l.String()))
		}
	}
	return errs
}

// TestPortConflict: a pod that already uses one of the proxy's ports is
// skipped with the reason, never given an Envoy that cannot bind.
func TestPortConflict(t *testing.T) {
	httpProbe := func(port intstr.IntOrString, host string) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: port, Host: host}}}
	}
	tests := []struct {
		name       string
		mode       string
		init       []corev1.Container
		containers []corev1.Container
		want       string // substring of the reason; "" for injected
	}{
		{name: "declared listener port", containers: []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{ContainerPort: 15080}}}}, want: `"app" uses port 15080`},
		{name: "declared UDP port", containers: []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{ContainerPort: 15021, Protocol: corev1.ProtocolUDP}}}}},
		{name: "probed health port", containers: []corev1.Container{{Name: "app", ReadinessProbe: httpProbe(intstr.FromInt32(15021), "")}}, want: `"app" uses port 15021`},
		{name: "probe on another host", containers: []corev1.Container{{Name: "app", LivenessProbe: httpProbe(intstr.FromInt32(15021), "10.0.0.1")}}},
		{name: "named probe port", containers: []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{Name: "admin", ContainerPort: 15000}}, StartupProbe: httpProbe(intstr.FromString("admin"), "")}}, want: `"app" uses port 15000`},
		{name: "tcp probe", containers: []corev1.Container{{Name: "app", LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(15000)}}}}}, want: "port 15000"},
		{name: "grpc probe", containers: []corev1.Container{{Name: "app", LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 15080}}}}}, want: "port 15080"},
		{name: "istio-proxy binds the admin port undeclared", containers: []corev1.Container{{Name: "app"}, {Name: "istio-proxy"}}, want: `"istio-proxy" uses port 15000`},
		{name: "linkerd-proxy clear of the defaults", init: []corev1.Container{{Name: "linkerd-proxy", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways)}}, containers: []corev1.Container{{Name: "app"}}},
		{name: "init container runs beside a native proxy", init: []corev1.Container{{Name: "warmup", Ports: []corev1.ContainerPort{{ContainerPort: 15080}}}}, containers: []corev1.Container{{Name: "app"}}, want: `"warmup" uses port 15080`},
		{name: "init container finished before a regular proxy", mode: SidecarContainer, init: []corev1.Container{{Name: "warmup", Ports: []corev1.ContainerPort{{ContainerPort: 15080}}}}, containers: []corev1.Container{{Name: "app"}}},
		{name: "other ports", containers: []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{ContainerPort: 8080}, {ContainerPort: 15090}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			if tt.mode != "" {
				cfg.SidecarMode = tt.mode
			}
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{InitContainers: tt.init, Containers: tt.containers}}
			res := mutate(t, cfg, pod)
			switch {
			case tt.want == "" && !res.Injected:
				t.Errorf("not injected: %s", res.Reason)
			case tt.want != "" && (res.Injected || !strings.Contains(res.Reason, tt.want)):
				t.Errorf("injected=%v reason %q, want skipped with %q", res.Injected, res.Reason, tt.want)
			case tt.want != "" && res.Pod.Annotations[AnnotationStatus] != "skipped: "+res.Reason:
				t.Errorf("status annotation %q does not say why", res.Pod.Annotations[AnnotationStatus])
			}
		})
	}
}

// TestRunToCompletionPods: a native proxy never keeps a pod from
// completing, so every restartPolicy is injected natively; a regular proxy
// container would, so only restartPolicy Always pods get one.
func TestRunToCompletionPods(t *testing.T) {
	for _, mode := range []string{SidecarNative, SidecarContainer} {
		for _, policy := range []corev1.RestartPolicy{"", corev1.RestartPolicyAlways, corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever} {
			t.Run(fmt.Sprintf("%s/%s", mode, policy), func(t *testing.T) {
				cfg := testConfig()
				cfg.SidecarMode = mode
				pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{RestartPolicy: policy, Containers: []corev1.Container{{Name: "job"}}}}
				res := mutate(t, cfg, pod)
				wantInjected := mode == SidecarNative || policy == "" || policy == corev1.RestartPolicyAlways
				if res.Injected != wantInjected {
					t.Fatalf("injected=%v (%s), want %v", res.Injected, res.Reason, wantInjected)
				}
				if !res.Injected {
					return
				}
				if res.Pod.Spec.RestartPolicy != policy {
					t.Errorf("pod restartPolicy changed to %q", res.Pod.Spec.RestartPolicy)
				}
				if mode == SidecarNative {
					proxy := res.Pod.Spec.InitContainers[0]
					if proxy.Name != ProxyName || !isSidecar(proxy) {
						t.Errorf("the proxy is not a native sidecar: %+v", proxy)
					}
				}
			})
		}
	}
}

// TestWebhookLongEnv: a container with a thousand env entries (and a
// hundred envFrom sources) gets ours as a few adds at the front, nothing
// of the user's rewritten, and a second pass changes nothing.
func TestWebhookLongEnv(t *testing.T) {
	app := corev1.Container{Name: "app", Image: "registry.example/hello:1.0"}
	for i := range 1000 {
		app.Env = append(app.Env, corev1.EnvVar{Name: fmt.Sprintf("SETTING_%04d", i), Value: strings.Repeat("v", 64)})
	}
	for i := range 100 {
		app.EnvFrom = append(app.EnvFrom, corev1.EnvFromSource{Prefix: fmt.Sprintf("CFG%d_", i), ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}}})
	}
	app.Env = append(app.Env, corev1.EnvVar{Name: "OPENAI_API_KEY", Value: "user's"}) // the last entry
	podJSON, err := json.Marshal(&corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "fn-long", Namespace: "fn"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{app}},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := startWebhook(t, testConfig(), false)
	resp := srv.call(t, admissionReview("u-long", "fn", podJSON, false))
	var ops []struct {
		Op   string `json:"op"`
		Path string `json:"path"`
	}
	if err := json.Unmarshal(resp.Patch, &ops); err != nil {
		t.Fatal(err)
	}
	envAdds := 0
	for _, op := range ops {
		if strings.HasPrefix(op.Path, "/spec/containers/0/env") {
			if op.Op != "add" || op.Path != fmt.Sprintf("/spec/containers/0/env/%d", envAdds) {
				t.Errorf("user env touched: %s %s", op.Op, op.Path)
			}
			envAdds++
		}
	}
	// Gateway, Anthropic and Gemini pairs; OpenAI is the user's.
	if envAdds != 6 {
		t.Errorf("%d env entries added, want 6", envAdds)
	}
	if len(resp.Patch) > 8<<10 {
		t.Errorf("patch is %d bytes for a pod whose env is untouched", len(resp.Patch))
	}
	var out corev1.Pod
	got := applyPatch(t, podJSON, resp)
	strictDecode(t, got, &out)
	user, _ := json.Marshal(app.Env)
	kept, _ := json.Marshal(out.Spec.Containers[0].Env[envAdds:])
	if !bytes.Equal(user, kept) {
		t.Error("user env changed")
	}
	if again := srv.call(t, admissionReview("u-long-2", "fn", got, false)); len(again.Patch) != 0 {
		t.Errorf("second pass patched: %s", again.Patch)
	}
	// A hundred sources naming one ConfigMap cost one read.
	gets := 0
	for _, a := range srv.client.Actions() {
		if a.GetVerb() == "get" && a.GetResource().Resource == "configmaps" {
			gets++
		}
	}
	if gets != 1 {
		t.Errorf("%d ConfigMap reads, want 1", gets)
	}
}
