package injector

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/tollgate-dev/tollgate/pkg/envvars"
)

// Source kinds for [SourceKeys].
const (
	KindConfigMap = "ConfigMap"
	KindSecret    = "Secret"
)

// SourceKeys reads the keys of a container's envFrom sources. An error
// means the keys are unknown (missing object, no permission, API down):
// the injector then applies its envFrom policy.
type SourceKeys interface {
	Keys(ctx context.Context, namespace, kind, name string) ([]string, error)
}

// AccountChecker says whether an account has AI features enabled.
type AccountChecker interface {
	AccountEnabled(ctx context.Context, account string) (bool, error)
}

// Mutator decides whether a pod gets the proxy and the variables, and
// applies them. It is a pure function of the pod, the namespace and what
// its lookups answer: it writes nothing anywhere, so it is safe under
// dryRun and on reinvocation.
type Mutator struct {
	cfg      Config
	keys     SourceKeys     // nil: every envFrom source is unknown
	accounts AccountChecker // nil: every account counts as enabled
	log      *slog.Logger
}

// NewMutator returns a Mutator for cfg, which must be valid. keys and
// accounts may be nil (offline use, `tollgate inject -f`).
func NewMutator(cfg Config, keys SourceKeys, accounts AccountChecker, log *slog.Logger) (*Mutator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Mutator{cfg: cfg, keys: keys, accounts: accounts, log: log}, nil
}

// Request is one pod to mutate.
type Request struct {
	Pod       *corev1.Pod // not modified
	Namespace Namespace
	// Manual is set when a person asked for the injection (tollgate inject
	// -f): that is the opt-in, so the namespace's label is not required;
	// the pod's own opt-out still holds.
	Manual bool
}

// Result is the outcome of Mutate.
type Result struct {
	// Pod is the mutated copy, or the request's pod when nothing changed.
	Pod *corev1.Pod
	// Injected reports whether the proxy and variables were added.
	Injected bool
	// Reason says why not, when not injected.
	Reason string
}

// Mutate returns req.Pod injected, or unchanged (or only annotated with the
// reason, for a pod in an opted-in namespace that is deliberately skipped).
func (m *Mutator) Mutate(ctx context.Context, req Request) Result {
	pod, ns := req.Pod, req.Namespace
	if ns.Name == "" {
		ns.Name = pod.Namespace
	}
	unchanged := func(reason string) Result { return Result{Pod: pod, Reason: reason} }

	if !req.Manual {
		switch {
		case ns.System():
			return unchanged("system namespace")
		case ns.Name == m.cfg.OwnNamespace:
			return unchanged("the injector's own namespace")
		case !ns.OptedIn():
			return unchanged(fmt.Sprintf("namespace not opted in (label %s=%s)", LabelInject, ValueEnabled))
		}
	}
	if reason := podOptOut(pod); reason != "" {
		return unchanged(reason)
	}
	if _, ok := pod.Annotations[annotationMirror]; ok {
		return unchanged("mirror pod")
	}
	if m.injected(pod) {
		return unchanged("already injected")
	}

	// From here on the pod is one we were asked to inject; a pod we decline
	// says why in its status annotation.
	if reason := m.refusal(ctx, pod, ns); reason != "" {
		out := pod.DeepCopy()
		setAnnotation(out, AnnotationStatus, "skipped: "+reason)
		return Result{Pod: out, Reason: reason}
	}
	return Result{Pod: m.inject(ctx, pod, ns), Injected: true}
}

// podOptOut returns why the pod's own label or annotation keeps it out,
// or "". A value that is neither yes nor no keeps it out too: the user
// wrote something about injection, and guessing would be worse.
func podOptOut(pod *corev1.Pod) string {
	for _, v := range []string{pod.Labels[LabelInject], pod.Annotations[LabelInject]} {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "", "true", "enabled":
		case "false", "disabled":
			return "pod opted out"
		default:
			return fmt.Sprintf("pod has %s=%q: want true, false, enabled or disabled", LabelInject, v)
		}
	}
	return ""
}

// injected reports whether pod is already our output: the status says so
// and the proxy is there (an annotation copied alone proves nothing).
func (m *Mutator) injected(pod *corev1.Pod) bool {
	return pod.Annotations[AnnotationStatus] == StatusInjected && hasContainer(pod, m.cfg.Proxy.Name)
}

func hasContainer(pod *corev1.Pod, name string) bool {
	is := func(c corev1.Container) bool { return c.Name == name }
	return slices.ContainsFunc(pod.Spec.Containers, is) || slices.ContainsFunc(pod.Spec.InitContainers, is)
}

// refusal returns why an opted-in pod must not be injected, or "".
func (m *Mutator) refusal(ctx context.Context, pod *corev1.Pod, ns Namespace) string {
	switch {
	case pod.Spec.HostNetwork:
		return "hostNetwork pod: the proxy's ports would bind on the node"
	case pod.Spec.OS != nil && pod.Spec.OS.Name == corev1.Windows,
		pod.Spec.OS == nil && pod.Spec.NodeSelector[corev1.LabelOSStable] == string(corev1.Windows):
		// Older manifests reach Windows nodes by node selector alone.
		return "Windows pod: the proxy image is Linux only"
	case hasContainer(pod, m.cfg.Proxy.Name):
		return fmt.Sprintf("the pod already has a container named %q", m.cfg.Proxy.Name)
	case m.cfg.SidecarMode == SidecarContainer && pod.Spec.RestartPolicy != "" && pod.Spec.RestartPolicy != corev1.RestartPolicyAlways:
		// A regular proxy container never exits, so the pod (a Job's) would
		// never complete: better run it without the gateway, visibly.
		return fmt.Sprintf("restartPolicy %s pod and the proxy is a regular container (sidecar mode %q): it would keep the pod from completing; native sidecars do not", pod.Spec.RestartPolicy, SidecarContainer)
	}
	if reason := m.portConflict(pod); reason != "" {
		return reason
	}
	switch {
	case ns.Account() == "":
		return fmt.Sprintf("namespace %q names no account (%s)", ns.Name, KeyAccount)
	}
	if m.accounts != nil {
		enabled, err := m.accounts.AccountEnabled(ctx, ns.Account())
		switch {
		case err != nil:
			// The processor refuses a disabled account's tokens anyway, so
			// injecting cannot leak anything; refusing would break every
			// working account's pods for as long as the admin API is down.
			m.log.WarnContext(ctx, "injector: account status unknown, injecting", "namespace", ns.Name, "err", err)
		case !enabled:
			return "the account has AI features disabled"
		}
	}
	return ""
}

// inject returns a copy of pod with the proxy and the variables.
func (m *Mutator) inject(ctx context.Context, pod *corev1.Pod, ns Namespace) *corev1.Pod {
	out := pod.DeepCopy()
	lookup := m.sourceLookup(ctx, ns.Name)
	nsDefined := ns.DefinedEnv()

	set := map[string][]string{}
	apply := func(c *corev1.Container) {
		vars := envvars.Plan(m.cfg.envConfig(), m.defined(ctx, c, nsDefined, lookup))
		set[c.Name] = providers(vars)
		c.Env = append(m.envEntries(vars), c.Env...)
	}
	targets := m.targets(out)
	for i := range out.Spec.Containers {
		if slices.Contains(targets, out.Spec.Containers[i].Name) {
			apply(&out.Spec.Containers[i])
		}
	}
	if strings.EqualFold(strings.TrimSpace(out.Annotations[AnnotationEnvInitContainers]), "true") {
		for i := range out.Spec.InitContainers {
			c := &out.Spec.InitContainers[i]
			if !isSidecar(*c) && !m.knownSidecar(c.Name) {
				apply(c)
			}
		}
	}

	addPodLevelResources(&out.Spec, m.cfg.Proxy.Resources)
	proxy := m.cfg.Proxy.container(m.cfg.SidecarMode == SidecarNative)
	if m.cfg.SidecarMode == SidecarNative {
		// First, so that the other init containers can reach the gateway too.
		out.Spec.InitContainers = append([]corev1.Container{proxy}, out.Spec.InitContainers...)
	} else {
		out.Spec.Containers = append(out.Spec.Containers, proxy)
	}

	setAnnotation(out, AnnotationStatus, StatusInjected)
	env, err := json.Marshal(set) // map keys marshal sorted: deterministic
	if err != nil {
		panic("injector: encoding a map of string slices failed: " + err.Error())
	}
	setAnnotation(out, AnnotationEnv, string(env))
	if _, ok := out.Annotations[AnnotationDefaultContainer]; !ok {
		if app := m.appContainers(pod); len(app) > 0 {
			setAnnotation(out, AnnotationDefaultContainer, app[0])
		}
	}
	return out
}

// meshPorts are ports other meshes' sidecars bind without declaring them
// as containerPorts or probing them (Istio's and Linkerd's documented
// port lists); declared and probed ports are read from the pod itself.
var meshPorts = map[string][]int32{
	"istio-proxy":   {15000, 15001, 15004, 15006, 15008, 15009, 15020, 15021, 15053, 15090},
	"linkerd-proxy": {4140, 4143, 4190, 4191},
}

// portConflict returns why the proxy cannot bind its ports in the pod, or
// "": a container that declares, probes or (as a known mesh sidecar) binds
// one of them. Envoy would fail to start and the pod with it; a skipped
// pod runs, and says why. Ports a container binds without saying so
// cannot be seen here.
func (m *Mutator) portConflict(pod *corev1.Pod) string {
	ours := m.cfg.Proxy.ports()
	var running []corev1.Container
	for _, c := range pod.Spec.InitContainers {
		// A native proxy starts first and runs beside every init
		// container; a regular one only beside native sidecars.
		if m.cfg.SidecarMode == SidecarNative || isSidecar(c) {
			running = append(running, c)
		}
	}
	for _, c := range append(running, pod.Spec.Containers...) {
		for _, port := range boundPorts(c) {
			if slices.Contains(ours, port) {
				return fmt.Sprintf("container %q uses port %d, which the proxy needs (the injector's --proxy-*-port flags choose other ports)", c.Name, port)
			}
		}
	}
	return ""
}

// boundPorts are the TCP ports c is known to listen on in the pod's
// network namespace.
func boundPorts(c corev1.Container) []int32 {
	ports := slices.Clone(meshPorts[c.Name])
	for _, p := range c.Ports {
		if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
			ports = append(ports, p.ContainerPort)
		}
	}
	for _, pr := range []*corev1.Probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
		switch {
		case pr == nil:
		case pr.HTTPGet != nil && pr.HTTPGet.Host == "" && pr.HTTPGet.Port.Type == intstr.Int:
			ports = append(ports, pr.HTTPGet.Port.IntVal)
		case pr.TCPSocket != nil && pr.TCPSocket.Host == "" && pr.TCPSocket.Port.Type == intstr.Int:
			ports = append(ports, pr.TCPSocket.Port.IntVal)
		case pr.GRPC != nil:
			ports = append(ports, pr.GRPC.Port)
		}
	}
	return ports
}

// addPodLevelResources grows the pod-level budget (spec.resources, the
// PodLevelResources feature) by the proxy's resources, for each resource
// the pod sets: the API server requires pod requests ≥ the containers'
// aggregate requests and each container's limit ≤ the pod's limit, and the
// app keeps the share its owner gave it. A limit grows by the proxy's
// limit, or its request when it has none, so requests ≤ limits still holds.
func addPodLevelResources(spec *corev1.PodSpec, proxy corev1.ResourceRequirements) {
	if spec.Resources == nil {
		return
	}
	// Kubernetes defaults a container's missing request to its limit.
	request := func(name corev1.ResourceName) (resource.Quantity, bool) {
		if q, ok := proxy.Requests[name]; ok {
			return q, true
		}
		q, ok := proxy.Limits[name]
		return q, ok
	}
	grow := func(list corev1.ResourceList, name corev1.ResourceName, by resource.Quantity) {
		sum := list[name].DeepCopy()
		sum.Add(by)
		list[name] = sum
	}
	for name := range spec.Resources.Requests {
		if q, ok := request(name); ok {
			grow(spec.Resources.Requests, name, q)
		}
	}
	for name := range spec.Resources.Limits {
		q, ok := proxy.Limits[name]
		if !ok {
			q, ok = request(name)
		}
		if ok {
			grow(spec.Resources.Limits, name, q)
		}
	}
}

// appContainers are the pod's regular containers that are not another
// injector's sidecar (or ours).
func (m *Mutator) appContainers(pod *corev1.Pod) []string {
	var names []string
	for _, c := range pod.Spec.Containers {
		if !m.knownSidecar(c.Name) {
			names = append(names, c.Name)
		}
	}
	return names
}

// targets are the regular containers that get the variables: those the pod
// lists in AnnotationEnvContainers, else every app container.
func (m *Mutator) targets(pod *corev1.Pod) []string {
	apps := m.appContainers(pod)
	v, ok := pod.Annotations[AnnotationEnvContainers]
	if !ok {
		return apps
	}
	var names []string
	for _, n := range splitList(v) {
		if slices.Contains(apps, n) {
			names = append(names, n)
		}
	}
	return names
}

func (m *Mutator) knownSidecar(name string) bool {
	return name == m.cfg.Proxy.Name || slices.Contains(knownSidecars, name) || slices.Contains(m.cfg.ExtraSidecars, name)
}

// isSidecar reports whether an init container is a native sidecar.
func isSidecar(c corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

// keysFunc looks up an envFrom source's keys; ok is false when unknown.
type keysFunc func(kind, name string) (keys []string, ok bool)

// sourceLookup returns a keysFunc that asks m.keys at most once per source
// for this pod.
func (m *Mutator) sourceLookup(ctx context.Context, namespace string) keysFunc {
	type answer struct {
		keys []string
		ok   bool
	}
	seen := map[string]answer{}
	return func(kind, name string) ([]string, bool) {
		id := kind + "/" + name
		if a, ok := seen[id]; ok {
			return a.keys, a.ok
		}
		var a answer
		if m.keys != nil {
			keys, err := m.keys.Keys(ctx, namespace, kind, name)
			if err != nil {
				m.log.InfoContext(ctx, "injector: envFrom keys unknown", "namespace", namespace, "source", id, "policy", m.cfg.EnvFromPolicy, "err", err)
			}
			a = answer{keys, err == nil}
		}
		seen[id] = a
		return a.keys, a.ok
	}
}

// defined returns the predicate envvars.Plan asks: is the name set for c,
// by its env, its envFrom sources or the namespace?
func (m *Mutator) defined(ctx context.Context, c *corev1.Container, nsDefined []string, lookup keysFunc) func(string) bool {
	names := map[string]bool{}
	for _, e := range c.Env {
		names[e.Name] = true
	}
	for _, n := range nsDefined {
		names[n] = true
	}
	var unknown []string // prefixes of sources whose keys are unknown
	for _, ef := range c.EnvFrom {
		kind, name := KindConfigMap, ""
		switch {
		case ef.ConfigMapRef != nil:
			name = ef.ConfigMapRef.Name
		case ef.SecretRef != nil:
			kind, name = KindSecret, ef.SecretRef.Name
		default:
			continue
		}
		keys, ok := lookup(kind, name)
		if !ok {
			unknown = append(unknown, ef.Prefix)
			continue
		}
		for _, k := range keys {
			names[ef.Prefix+k] = true
		}
	}
	skipUnknown := m.cfg.EnvFromPolicy == EnvFromSkip
	return func(name string) bool {
		if names[name] {
			return true
		}
		return skipUnknown && slices.ContainsFunc(unknown, func(p string) bool { return strings.HasPrefix(name, p) })
	}
}

// envEntries turns planned variables into env entries: the token by
// reference to the namespace's Secret, never as a value.
func (m *Mutator) envEntries(vars []envvars.Var) []corev1.EnvVar {
	out := make([]corev1.EnvVar, 0, len(vars))
	for _, v := range vars {
		e := corev1.EnvVar{Name: v.Name}
		if v.Secret {
			e.ValueFrom = &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: m.cfg.TokenSecret},
				Key:                  TokenSecretKey,
			}}
		} else {
			e.Value = v.Value
		}
		out = append(out, e)
	}
	return out
}

// providers lists the providers vars cover, in plan order, without repeats.
func providers(vars []envvars.Var) []string {
	out := []string{}
	for _, v := range vars {
		if !slices.Contains(out, v.Provider) {
			out = append(out, v.Provider)
		}
	}
	return out
}

func setAnnotation(pod *corev1.Pod, key, value string) {
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[key] = value
}

// container is the proxy's container spec. It complies with the
// "restricted" Pod Security Standard, which is checked after mutation.
func (p Proxy) container(native bool) corev1.Container {
	probe := func(failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: p.HealthPath,
				Port: intstr.FromInt32(p.HealthPort),
			}},
			PeriodSeconds:    1,
			FailureThreshold: failures,
		}
	}
	c := corev1.Container{
		Name:            p.Name,
		Image:           p.Image,
		ImagePullPolicy: p.PullPolicy,
		Args:            []string{"--config-yaml", string(p.Bootstrap)},
		Ports:           []corev1.ContainerPort{{Name: "tg-health", ContainerPort: p.HealthPort, Protocol: corev1.ProtocolTCP}},
		// A native sidecar's startup probe holds back the containers after
		// it until Envoy is ready, so the app's first call finds it up.
		StartupProbe:   probe(60),
		ReadinessProbe: probe(3),
		Resources:      *p.Resources.DeepCopy(),
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			RunAsUser:                ptr.To(p.RunAsUser),
			RunAsGroup:               ptr.To(p.RunAsUser),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
	if native {
		c.RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
	}
	return c
}
