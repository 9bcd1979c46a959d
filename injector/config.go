package injector

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/tollgate-dev/tollgate/pkg/envvars"
)

// Labels and annotations the injector reads and writes. They are the
// injector's public interface: the Helm chart selects on them and operators
// set them.
const (
	// LabelInject on a namespace opts it in (value "enabled"). On a pod (label
	// or annotation) the value "false" or "disabled" opts the pod out.
	LabelInject = "tollgate.dev/inject"
	// ValueEnabled is the namespace opt-in value of LabelInject.
	ValueEnabled = "enabled"

	// KeyAccount and KeyProject on a namespace (annotation, or label when no
	// annotation) name the account billed and the project the token is
	// scoped to. The project defaults to the namespace name.
	KeyAccount = "tollgate.dev/account"
	KeyProject = "tollgate.dev/project"

	// AnnotationDefinedEnv on a namespace lists, comma-separated, the
	// variable names the operator sets in that namespace by other means
	// (a platform-level default): they count as defined by the user.
	AnnotationDefinedEnv = "tollgate.dev/defined-env"

	// AnnotationEnvContainers on a pod lists, comma-separated, the
	// containers that get the variables, instead of every app container.
	AnnotationEnvContainers = "tollgate.dev/env-containers"
	// AnnotationEnvInitContainers on a pod, "true", also sets the variables
	// on its (run-to-completion) init containers.
	AnnotationEnvInitContainers = "tollgate.dev/env-init-containers"

	// AnnotationStatus is written by the injector: "injected", or
	// "skipped: <reason>" for a pod in an opted-in namespace that it
	// deliberately left alone. A pod carrying "injected" and the proxy
	// container is never changed again.
	AnnotationStatus = "tollgate.dev/status"
	// AnnotationEnv is written by the injector: per container, the providers
	// whose variables it set, as a JSON object.
	AnnotationEnv = "tollgate.dev/env"

	// AnnotationDefaultContainer is kubectl's: the container `kubectl logs`
	// and `exec` pick. Set to the first app container unless present.
	AnnotationDefaultContainer = "kubectl.kubernetes.io/default-container"
	// annotationMirror marks a static pod's mirror; those are not ours.
	annotationMirror = "kubernetes.io/config.mirror"

	// StatusInjected is AnnotationStatus's value on an injected pod.
	StatusInjected = "injected"
)

// TokenSecretKey is the key of the gateway token in the namespace's token
// Secret.
const TokenSecretKey = "token"

// Sidecar placement modes.
const (
	// SidecarNative adds the proxy as the first init container with
	// restartPolicy Always (Kubernetes ≥ 1.29 with the SidecarContainers
	// feature, GA in 1.33): it starts before everything else, including the
	// other init containers, and does not keep a Job from completing.
	SidecarNative = "native"
	// SidecarContainer adds the proxy as the last regular container, for
	// clusters without native sidecars.
	SidecarContainer = "container"
)

// EnvFrom policies: what to do with a provider whose variables an envFrom
// source might define when its keys cannot be read.
const (
	// EnvFromSkip counts every name such a source could produce as defined,
	// so that provider is left alone: never override the user.
	EnvFromSkip = "skip"
	// EnvFromInject ignores sources whose keys cannot be read: the variables
	// are set, and override the source's (env beats envFrom).
	EnvFromInject = "inject"
)

// knownSidecars are containers other injectors add; they are not app
// containers, so they get no variables (they may be seen on reinvocation).
var knownSidecars = []string{"istio-proxy", "istio-init", "istio-validation", "linkerd-proxy", "linkerd-init", "daprd", "vault-agent", "vault-agent-init"}

// Config is how the injector mutates pods.
type Config struct {
	// Proxy is the sidecar container to add.
	Proxy Proxy
	// SidecarMode is SidecarNative or SidecarContainer.
	SidecarMode string
	// TokenSecret is the name of the Secret, in each opted-in namespace,
	// holding the gateway token under TokenSecretKey.
	TokenSecret string
	// Names are the gateway pair's variable names.
	Names envvars.Names
	// EnvFromPolicy is EnvFromSkip or EnvFromInject.
	EnvFromPolicy string
	// OwnNamespace is where the injector runs; its pods are never touched.
	OwnNamespace string
	// ExtraSidecars are more container names, beside the known ones of
	// other meshes, that are never app containers.
	ExtraSidecars []string
}

// Proxy is the sidecar container: Envoy with its bootstrap.
type Proxy struct {
	Name  string // container name, "tollgate-proxy"
	Image string
	// Bootstrap is the Envoy bootstrap as JSON, passed inline with
	// --config-yaml (JSON is YAML), so the pod carries its own complete
	// config and depends on no other object.
	Bootstrap []byte
	// ListenAddress and ListenerPort are where, on loopback, the app
	// calls; the base URLs point there.
	ListenAddress string
	ListenerPort  int32
	// AdminPort is Envoy's admin interface, on loopback.
	AdminPort int32
	// HealthPort and HealthPath serve Envoy's readiness on the pod IP, for
	// the kubelet's probes.
	HealthPort int32
	HealthPath string
	// Resources of the proxy container.
	Resources corev1.ResourceRequirements
	// PullPolicy of the proxy image; empty leaves Kubernetes' default.
	PullPolicy corev1.PullPolicy
	// RunAsUser is the proxy's non-root uid (101, envoy, in the official image).
	RunAsUser int64
}

// ports are the TCP ports the proxy binds in the pod's network namespace.
func (p Proxy) ports() []int32 { return []int32{p.ListenerPort, p.AdminPort, p.HealthPort} }

// DefaultProxyResources fit one Envoy serving one function's calls.
func DefaultProxyResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("50m"),
			corev1.ResourceMemory: resource.MustParse("64Mi"),
		},
		Limits: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("1"),
			corev1.ResourceMemory: resource.MustParse("256Mi"),
		},
	}
}

// Validate reports whether c can mutate pods.
func (c Config) Validate() error {
	var errs []error
	p := c.Proxy
	if p.Name == "" || p.Image == "" {
		errs = append(errs, errors.New("proxy container name and image are required"))
	}
	if ip := net.ParseIP(p.ListenAddress); ip == nil || !ip.IsLoopback() {
		errs = append(errs, fmt.Errorf("proxy listen address %q: want a loopback IP", p.ListenAddress))
	}
	if len(p.Bootstrap) == 0 {
		errs = append(errs, errors.New("proxy bootstrap is empty"))
	}
	ports := p.ports()
	for i, port := range ports {
		if port <= 0 || port > 65535 {
			errs = append(errs, fmt.Errorf("proxy port %d out of range", port))
		}
		if slices.Contains(ports[:i], port) {
			errs = append(errs, fmt.Errorf("proxy port %d is used twice (listener, admin and health ports must differ)", port))
		}
	}
	if !slices.Contains([]corev1.PullPolicy{"", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever}, p.PullPolicy) {
		errs = append(errs, fmt.Errorf("proxy image pull policy %q: want Always, IfNotPresent or Never", p.PullPolicy))
	}
	// The API server refuses a container whose request exceeds its limit:
	// every injected pod would be refused.
	for name, limit := range p.Resources.Limits {
		if req, ok := p.Resources.Requests[name]; ok && req.Cmp(limit) > 0 {
			errs = append(errs, fmt.Errorf("proxy %s request %s is above its limit %s", name, req.String(), limit.String()))
		}
	}
	if !slices.Contains([]string{SidecarNative, SidecarContainer}, c.SidecarMode) {
		errs = append(errs, fmt.Errorf("sidecar mode %q: want %q or %q", c.SidecarMode, SidecarNative, SidecarContainer))
	}
	if !slices.Contains([]string{EnvFromSkip, EnvFromInject}, c.EnvFromPolicy) {
		errs = append(errs, fmt.Errorf("envFrom policy %q: want %q or %q", c.EnvFromPolicy, EnvFromSkip, EnvFromInject))
	}
	if c.TokenSecret == "" {
		errs = append(errs, errors.New("token Secret name is required"))
	}
	if err := c.envConfig().Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("injector: config: %w", err)
	}
	return nil
}

// BaseURL is the gateway root the variables point at: the proxy on loopback.
func (c Config) BaseURL() string {
	return (&url.URL{Scheme: "http", Host: net.JoinHostPort(c.Proxy.ListenAddress, strconv.Itoa(int(c.Proxy.ListenerPort)))}).String()
}

// envConfig is the envvars configuration. Key stays empty: the token never
// passes through the injector, the variables reference the Secret.
func (c Config) envConfig() envvars.Config {
	return envvars.Config{BaseURL: c.BaseURL(), Names: c.Names}
}
