package chart

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/lint/support"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// Names of the objects a release "tg" in "tollgate-system" makes.
const (
	processorName = "tg-tollgate-processor"
	injectorName  = "tg-tollgate-injector"
	webhookName   = "tg-tollgate-injector.tollgate-system"
)

// vals builds a values tree from dotted paths: vals("a.b", 1) is {a: {b: 1}}.
func vals(kv ...any) map[string]any {
	out := map[string]any{}
	for i := 0; i < len(kv); i += 2 {
		path := strings.Split(kv[i].(string), ".")
		m := out
		for _, p := range path[:len(path)-1] {
			next, ok := m[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[p] = next
			}
			m = next
		}
		m[path[len(path)-1]] = kv[i+1]
	}
	return out
}

// shared is what several replicas need.
var shared = []any{
	"redis.enabled", true, "redis.url", "redis://redis.cache:6379/0",
	"postgres.enabled", true, "postgres.existingSecret", "tollgate-pg",
}

func render(t *testing.T, v map[string]any) *Rendered {
	t.Helper()
	r, err := Render(v)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	return r
}

func one[T any](t *testing.T, r *Rendered, kind, name string) T {
	t.Helper()
	o, err := One[T](r, kind, name)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func container(t *testing.T, d *appsv1.Deployment, name string) corev1.Container {
	t.Helper()
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("deployment %s has no container %s", d.Name, name)
	return corev1.Container{}
}

// flags returns a container's --flag=value arguments as a map.
func flags(c corev1.Container) map[string]string {
	out := map[string]string{}
	for _, a := range c.Args {
		if k, v, ok := strings.Cut(strings.TrimPrefix(a, "--"), "="); ok && strings.HasPrefix(a, "--") {
			out[k] = v
		}
	}
	return out
}

// serveConfig is the rendered `tollgate serve` config, read the way the
// binary reads it (test/chart's TestServeConfigRunsTollgate runs the binary
// on it; this is for asserting on values).
type serveConfig struct {
	Listen         string `json:"listen"`
	GRPCListen     string `json:"grpc_listen"`
	AdminListen    string `json:"admin_listen"`
	DataDir        string `json:"data_dir"`
	SigningKeysDir string `json:"signing_keys_dir"`
	Catalog        string `json:"catalog"`
	MaxRequestBody int64  `json:"max_request_body"`
	LogLevel       string `json:"log_level"`
	CreditsPerUSD  string `json:"credits_per_usd"`
	Limits         struct {
		RedisURL         string `json:"redis_url"`
		RedisFailureMode string `json:"redis_failure_mode"`
		MaxKeys          int    `json:"max_keys"`
	} `json:"limits"`
	MetricsListen string `json:"metrics_listen"`
	Telemetry     *struct {
		OTLPEndpoint string `json:"otlp_endpoint"`
		OTLPInsecure bool   `json:"otlp_insecure"`
		ServiceName  string `json:"service_name"`
	} `json:"telemetry"`
	Providers map[string]struct {
		KeyFile      string   `json:"key_file"`
		Upstream     string   `json:"upstream"`
		AllowHeaders []string `json:"allow_headers"`
		Versions     []string `json:"versions"`
	} `json:"providers"`
}

func readServeConfig(t *testing.T, r *Rendered) serveConfig {
	t.Helper()
	cm := one[*corev1.ConfigMap](t, r, "ConfigMap", processorName)
	var c serveConfig
	if err := yaml.UnmarshalStrict([]byte(cm.Data["serve.yaml"]), &c); err != nil {
		t.Fatalf("serve.yaml: %v\n%s", err, cm.Data["serve.yaml"])
	}
	return c
}

func TestRender(t *testing.T) {
	tests := []struct {
		name  string
		vals  map[string]any
		check func(t *testing.T, r *Rendered)
	}{
		{"defaults", nil, func(t *testing.T, r *Rendered) {
			want := []string{"ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Deployment",
				"MutatingWebhookConfiguration", "Namespace", "Pod", "PodDisruptionBudget", "PodDisruptionBudget",
				"Role", "RoleBinding", "Secret", "Secret", "Service", "Service", "ServiceAccount", "ServiceAccount"}
			if got := r.Kinds(); !slices.Equal(got, want) {
				t.Errorf("kinds = %v\nwant    %v", got, want)
			}
			d := one[*appsv1.Deployment](t, r, "Deployment", processorName)
			if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
				t.Errorf("processor replicas = %v, want 1", d.Spec.Replicas)
			}
			pdb := one[*policyv1.PodDisruptionBudget](t, r, "PodDisruptionBudget", processorName)
			if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.MinAvailable != nil {
				t.Errorf("processor PDB = %+v, want maxUnavailable 1 only (a single replica must stay drainable)", pdb.Spec)
			}
			if v := d.Spec.Template.Spec.Volumes; !slices.ContainsFunc(v, func(v corev1.Volume) bool { return v.Name == "data" && v.EmptyDir != nil }) {
				t.Errorf("data volume is not an emptyDir without persistence: %+v", v)
			}
			c := container(t, d, "processor")
			if c.LivenessProbe == nil || c.LivenessProbe.GRPC == nil || c.LivenessProbe.GRPC.Port != 9090 {
				t.Errorf("liveness probe is not gRPC health on 9090: %+v", c.LivenessProbe)
			}
			if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
				t.Errorf("readiness probe is not HTTP /readyz: %+v", c.ReadinessProbe)
			}
			if cfg := readServeConfig(t, r); cfg.Telemetry != nil || cfg.MetricsListen != "0.0.0.0:9464" || cfg.CreditsPerUSD != "180" {
				t.Errorf("telemetry %+v, metrics_listen %q, credits_per_usd %q", cfg.Telemetry, cfg.MetricsListen, cfg.CreditsPerUSD)
			}
			cfg := readServeConfig(t, r)
			if cfg.Listen != "0.0.0.0:8080" || cfg.GRPCListen != "0.0.0.0:9090" || cfg.DataDir != "/var/lib/tollgate" || cfg.Catalog != "" {
				t.Errorf("serve config = %+v", cfg)
			}
			for p, pc := range cfg.Providers {
				if pc.KeyFile != "" {
					t.Errorf("%s has key_file %q with no key configured", p, pc.KeyFile)
				}
			}
			if got := cfg.Providers["anthropic"].AllowHeaders; !slices.Equal(got, []string{"anthropic-beta"}) {
				t.Errorf("anthropic allow_headers = %v", got)
			}
			if len(r.Find("Secret", "tg-tollgate-provider-keys")) != 0 {
				t.Errorf("a provider-keys Secret is rendered although no key is set")
			}
			// The admin token: random, in a Secret, given to the processor
			// (which checks it) and the injector (which calls the admin API)
			// by reference only.
			s := one[*corev1.Secret](t, r, "Secret", "tg-tollgate-admin-token")
			if len(s.Data["token"]) != 48 {
				t.Errorf("admin token has %d bytes", len(s.Data["token"]))
			}
			if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
				return e.Name == "TOLLGATE_ADMIN_TOKEN" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef.Name == s.Name
			}) {
				t.Errorf("the processor does not get the admin token from %s", s.Name)
			}
			inj := one[*appsv1.Deployment](t, r, "Deployment", injectorName)
			f := flags(container(t, inj, "injector"))
			mounted := false
			for _, v := range inj.Spec.Template.Spec.Volumes {
				for _, m := range inj.Spec.Template.Spec.Containers[0].VolumeMounts {
					if v.Name == m.Name && v.Secret != nil && v.Secret.SecretName == s.Name && len(v.Secret.Items) == 1 &&
						m.MountPath+"/"+v.Secret.Items[0].Path == f["admin-token-file"] {
						mounted = true
					}
				}
			}
			if !mounted {
				t.Errorf("the injector's --admin-token-file=%q is not the admin token Secret", f["admin-token-file"])
			}
			if cfg := readServeConfig(t, r); cfg.AdminListen != "0.0.0.0:9091" {
				t.Errorf("admin_listen = %q", cfg.AdminListen)
			}
			if f := flags(container(t, one[*appsv1.Deployment](t, r, "Deployment", injectorName), "injector")); f["admin-url"] != "http://tg-tollgate-processor.tollgate-system.svc:9091" {
				t.Errorf("--admin-url=%q", f["admin-url"])
			}
			if len(r.Find("HorizontalPodAutoscaler", "")) != 0 {
				t.Errorf("HPA rendered by default")
			}
		}},
		{"signing key", nil, func(t *testing.T, r *Rendered) {
			// One new ed25519 key, named <kid>.pem with a kid that sorts
			// by date, mounted whole where serve's signing_keys_dir is.
			s := one[*corev1.Secret](t, r, "Secret", "tg-tollgate-signing-keys")
			if len(s.Data) != 1 {
				t.Fatalf("signing-keys Secret has %d entries, want 1", len(s.Data))
			}
			for name, pem := range s.Data {
				if !regexp.MustCompile(`^tollgate-\d{14}\.pem$`).MatchString(name) {
					t.Errorf("key entry %q, want tollgate-YYYYMMDDhhmmss.pem", name)
				}
				checkSigningKey(t, name, pem)
			}
			checkSigningKeysMounted(t, r, s.Name)
		}},
		{"signing keys existingSecret", vals("signingKeys.existingSecret", "corp-token-keys"), func(t *testing.T, r *Rendered) {
			if len(r.Find("Secret", "tg-tollgate-signing-keys")) != 0 {
				t.Errorf("chart made a signing-keys Secret although existingSecret is set")
			}
			checkSigningKeysMounted(t, r, "corp-token-keys")
		}},
		{"replicas share the signing keys", vals(append(shared, "processor.replicas", 3)...), func(t *testing.T, r *Rendered) {
			d := one[*appsv1.Deployment](t, r, "Deployment", processorName)
			if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
				t.Fatalf("replicas = %v", d.Spec.Replicas)
			}
			checkSigningKeysMounted(t, r, "tg-tollgate-signing-keys")
		}},
		{"webhook", nil, func(t *testing.T, r *Rendered) {
			mwc := one[*admissionregistrationv1.MutatingWebhookConfiguration](t, r, "MutatingWebhookConfiguration", webhookName)
			if len(mwc.Webhooks) != 1 {
				t.Fatalf("webhooks = %d, want 1", len(mwc.Webhooks))
			}
			w := mwc.Webhooks[0]
			if *w.SideEffects != admissionregistrationv1.SideEffectClassNone ||
				*w.ReinvocationPolicy != admissionregistrationv1.IfNeededReinvocationPolicy ||
				!slices.Equal(w.AdmissionReviewVersions, []string{"v1"}) ||
				*w.FailurePolicy != admissionregistrationv1.Fail || *w.TimeoutSeconds != 5 {
				t.Errorf("webhook policy fields: %+v", w)
			}
			if w.ClientConfig.CABundle != nil {
				t.Errorf("caBundle rendered in selfSigned mode: the injector owns it and an upgrade would wipe it")
			}
			if s := w.ClientConfig.Service; s == nil || s.Name != injectorName || s.Namespace != Namespace || *s.Path != "/inject" {
				t.Errorf("clientConfig.service = %+v", s)
			}
			if len(w.Rules) != 1 || !slices.Equal(w.Rules[0].Operations, []admissionregistrationv1.OperationType{admissionregistrationv1.Create}) ||
				!slices.Equal(w.Rules[0].Resources, []string{"pods"}) {
				t.Errorf("rules = %+v, want CREATE pods only", w.Rules)
			}
			ns := w.NamespaceSelector.MatchExpressions
			if len(ns) != 2 || ns[0].Key != "tollgate.dev/inject" || ns[0].Operator != "In" || !slices.Equal(ns[0].Values, []string{"enabled"}) {
				t.Errorf("namespace opt-in selector = %+v", ns)
			}
			if len(ns) == 2 && (ns[1].Key != "kubernetes.io/metadata.name" || ns[1].Operator != "NotIn" ||
				!slices.Equal(ns[1].Values, []string{"kube-system", "kube-public", "kube-node-lease", Namespace})) {
				t.Errorf("namespace exclusion = %+v", ns[1])
			}
			os := w.ObjectSelector.MatchExpressions
			if len(os) != 1 || os[0].Key != "tollgate.dev/inject" || os[0].Operator != "NotIn" || !slices.Equal(os[0].Values, []string{"false", "disabled"}) {
				t.Errorf("pod opt-out selector = %+v", os)
			}
			// The injector's own pods carry the opt-out label, and its
			// flags name exactly this configuration and these selectors.
			d := one[*appsv1.Deployment](t, r, "Deployment", injectorName)
			if d.Spec.Template.Labels["tollgate.dev/inject"] != "false" {
				t.Errorf("injector pods are not opted out: %v", d.Spec.Template.Labels)
			}
			f := flags(container(t, d, "injector"))
			if f["webhook-config"] != mwc.Name || f["service"] != w.ClientConfig.Service.Name || f["tls-mode"] != "self-signed" {
				t.Errorf("--webhook-config=%q --service=%q --tls-mode=%q, configuration %q calls Service %q",
					f["webhook-config"], f["service"], f["tls-mode"], mwc.Name, w.ClientConfig.Service.Name)
			}
			if f["review-timeout"] != "4s" {
				t.Errorf("--review-timeout=%q: want below the webhook's 5 s timeout", f["review-timeout"])
			}
			if f["processor"] != "tg-tollgate-processor.tollgate-system.svc:9090" || f["sidecar-mode"] != "native" ||
				f["proxy-image"] != "docker.io/envoyproxy/envoy:v1.40.0" || f["proxy-port"] != "15080" || f["token-secret"] != "tollgate-gateway-token" {
				t.Errorf("injector flags = %v", f)
			}
		}},
		{"webhook overrides", vals("injector.webhook.failurePolicy", "Ignore", "injector.webhook.timeoutSeconds", 10,
			"injector.excludeNamespaces", []any{"legacy"}, "injector.webhook.annotations", map[string]any{"a": "b"}),
			func(t *testing.T, r *Rendered) {
				w := one[*admissionregistrationv1.MutatingWebhookConfiguration](t, r, "MutatingWebhookConfiguration", webhookName)
				if *w.Webhooks[0].FailurePolicy != admissionregistrationv1.Ignore || *w.Webhooks[0].TimeoutSeconds != 10 || w.Annotations["a"] != "b" {
					t.Errorf("overrides not applied: %+v", w.Webhooks[0])
				}
				if got := w.Webhooks[0].NamespaceSelector.MatchExpressions[1].Values; !slices.Contains(got, "legacy") {
					t.Errorf("excludeNamespaces not in selector: %v", got)
				}
			}},
		{"redis and postgres with 3 replicas", vals(append(shared, "processor.replicas", 3,
			"processor.podDisruptionBudget.minAvailable", 2, "processor.podDisruptionBudget.maxUnavailable", nil)...),
			func(t *testing.T, r *Rendered) {
				d := one[*appsv1.Deployment](t, r, "Deployment", processorName)
				if *d.Spec.Replicas != 3 {
					t.Errorf("replicas = %d", *d.Spec.Replicas)
				}
				cfg := readServeConfig(t, r)
				if cfg.Limits.RedisURL != "redis://redis.cache:6379/0" || cfg.Limits.RedisFailureMode != "local" {
					t.Errorf("limits = %+v", cfg.Limits)
				}
				c := container(t, d, "processor")
				env := map[string]corev1.EnvVar{}
				for _, e := range c.Env {
					env[e.Name] = e
				}
				if e, ok := env["TOLLGATE_LEDGER_URL"]; !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil ||
					e.ValueFrom.SecretKeyRef.Name != "tollgate-pg" || e.ValueFrom.SecretKeyRef.Key != "url" {
					t.Errorf("ledger URL does not come from the Secret: %+v", e)
				}
				if _, ok := env["TOLLGATE_REDIS_URL"]; ok {
					t.Errorf("TOLLGATE_REDIS_URL set although the URL is in the config")
				}
				pdb := one[*policyv1.PodDisruptionBudget](t, r, "PodDisruptionBudget", processorName)
				if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 2 || pdb.Spec.MaxUnavailable != nil {
					t.Errorf("PDB = %+v", pdb.Spec)
				}
			}},
		{"redis URL with a password from a Secret", vals("processor.replicas", 2, "redis.enabled", true, "redis.existingSecret", "redis-url",
			"postgres.enabled", true, "postgres.existingSecret", "pg", "postgres.urlKey", "dsn"),
			func(t *testing.T, r *Rendered) {
				if cfg := readServeConfig(t, r); cfg.Limits.RedisURL != "" {
					t.Errorf("redis_url in the ConfigMap: %q", cfg.Limits.RedisURL)
				}
				c := container(t, one[*appsv1.Deployment](t, r, "Deployment", processorName), "processor")
				var redis, ledger *corev1.SecretKeySelector
				for _, e := range c.Env {
					if e.ValueFrom != nil && e.Name == "TOLLGATE_REDIS_URL" {
						redis = e.ValueFrom.SecretKeyRef
					}
					if e.ValueFrom != nil && e.Name == "TOLLGATE_LEDGER_URL" {
						ledger = e.ValueFrom.SecretKeyRef
					}
				}
				if redis == nil || redis.Name != "redis-url" || redis.Key != "url" || ledger == nil || ledger.Key != "dsn" {
					t.Errorf("secret refs: redis %+v, ledger %+v", redis, ledger)
				}
			}},
		{"HPA", vals(append(shared, "processor.autoscaling.enabled", true, "processor.autoscaling.targetMemoryUtilizationPercentage", 80)...),
			func(t *testing.T, r *Rendered) {
				h := one[*autoscalingv2.HorizontalPodAutoscaler](t, r, "HorizontalPodAutoscaler", processorName)
				if h.Spec.ScaleTargetRef.Name != processorName || *h.Spec.MinReplicas != 2 || h.Spec.MaxReplicas != 10 || len(h.Spec.Metrics) != 2 {
					t.Errorf("HPA = %+v", h.Spec)
				}
				if d := one[*appsv1.Deployment](t, r, "Deployment", processorName); d.Spec.Replicas != nil {
					t.Errorf("replicas set with an HPA (the two would fight): %d", *d.Spec.Replicas)
				}
			}},
		{"cert-manager", vals("injector.certs.mode", "certManager"), func(t *testing.T, r *Rendered) {
			w := one[*admissionregistrationv1.MutatingWebhookConfiguration](t, r, "MutatingWebhookConfiguration", webhookName)
			if got := w.Annotations["cert-manager.io/inject-ca-from"]; got != Namespace+"/"+injectorName {
				t.Errorf("inject-ca-from = %q", got)
			}
			if w.Webhooks[0].ClientConfig.CABundle != nil {
				t.Errorf("caBundle rendered in certManager mode")
			}
			cert := one[*Certificate](t, r, "Certificate", injectorName)
			if !slices.Contains(cert.Spec.DNSNames, injectorName+"."+Namespace+".svc") || cert.Spec.SecretName != injectorName+"-tls" ||
				cert.Spec.IssuerRef.Name != injectorName || cert.Spec.IssuerRef.Kind != "Issuer" {
				t.Errorf("certificate = %+v", cert.Spec)
			}
			if is := one[*Issuer](t, r, "Issuer", injectorName); is.Spec.SelfSigned == nil {
				t.Errorf("issuer is not self-signed")
			}
			d := one[*appsv1.Deployment](t, r, "Deployment", injectorName)
			f := flags(container(t, d, "injector"))
			if f["tls-mode"] != "files" || f["tls-cert-file"] != "/etc/tollgate/tls/tls.crt" || f["tls-secret"] != "" {
				t.Errorf("injector TLS flags in certManager mode: %v", f)
			}
			if role := one[*rbacv1.Role](t, r, "Role", injectorName); slices.ContainsFunc(role.Rules, func(r rbacv1.PolicyRule) bool { return slices.Contains(r.Resources, "secrets") }) {
				t.Errorf("Role grants Secrets although cert-manager owns the TLS Secret: %+v", role.Rules)
			}
		}},
		{"cert-manager with a ClusterIssuer", vals("injector.certs.mode", "certManager",
			"injector.certs.certManager.issuerRef", map[string]any{"name": "corp-ca", "kind": "ClusterIssuer"}),
			func(t *testing.T, r *Rendered) {
				cert := one[*Certificate](t, r, "Certificate", injectorName)
				if cert.Spec.IssuerRef.Name != "corp-ca" || cert.Spec.IssuerRef.Kind != "ClusterIssuer" {
					t.Errorf("issuerRef = %+v", cert.Spec.IssuerRef)
				}
				if len(r.Find("Issuer", "")) != 0 {
					t.Errorf("own Issuer rendered although one is given")
				}
			}},
		{"existingSecret", vals("providerKeys.existingSecret", "corp-ai-keys", "providerKeys.secretKeys.gemini", ""),
			func(t *testing.T, r *Rendered) {
				if len(r.Find("Secret", "tg-tollgate-provider-keys")) != 0 {
					t.Errorf("chart made a provider-keys Secret although existingSecret is set")
				}
				d := one[*appsv1.Deployment](t, r, "Deployment", processorName)
				var vol *corev1.SecretVolumeSource
				for _, v := range d.Spec.Template.Spec.Volumes {
					if v.Secret != nil && v.Name == "provider-keys" {
						vol = v.Secret
					}
				}
				if vol == nil || vol.SecretName != "corp-ai-keys" || len(vol.Items) != 2 {
					t.Fatalf("provider-keys volume = %+v", vol)
				}
				cfg := readServeConfig(t, r)
				if cfg.Providers["openai"].KeyFile == "" || cfg.Providers["anthropic"].KeyFile == "" || cfg.Providers["gemini"].KeyFile != "" {
					t.Errorf("key files = %+v (gemini has no key in the Secret)", cfg.Providers)
				}
			}},
		{"keys from values", vals("providerKeys.openai", "sk-test-1", "processor.providers.openai.upstream", "https://openai.corp.example"),
			func(t *testing.T, r *Rendered) {
				s := one[*corev1.Secret](t, r, "Secret", "tg-tollgate-provider-keys")
				if string(s.Data["openai"]) != "sk-test-1" || len(s.Data) != 1 {
					t.Errorf("secret data keys = %v", len(s.Data))
				}
				cfg := readServeConfig(t, r)
				if cfg.Providers["openai"].KeyFile != "/var/run/secrets/tollgate/providers/openai" || cfg.Providers["openai"].Upstream != "https://openai.corp.example" {
					t.Errorf("openai config = %+v", cfg.Providers["openai"])
				}
			}},
		// The injector answers before the API server gives up on it, also
		// at the schema's least timeout (a 0s review timeout would mean the
		// injector's 5 s default).
		{"webhook timeout 1s", vals("injector.webhook.timeoutSeconds", 1), func(t *testing.T, r *Rendered) {
			f := flags(container(t, one[*appsv1.Deployment](t, r, "Deployment", injectorName), "injector"))
			d, err := time.ParseDuration(f["review-timeout"])
			if err != nil || d <= 0 || d >= time.Second {
				t.Errorf("--review-timeout=%q with timeoutSeconds 1: want above 0 and below 1s", f["review-timeout"])
			}
		}},
		// The sidecar's resources and pull policy reach the injector, which
		// puts them on every proxy container: rendered as flags the
		// binary reads (TestInjectorArgsAreFlags), from the documented values.
		{"sidecar resources default", nil, func(t *testing.T, r *Rendered) {
			// The injector's defaults.
			wantProxyFlags(t, r, [4]string{"50m", "64Mi", "1", "256Mi"}, "IfNotPresent")
		}},
		{"sidecar resources set", vals("injector.sidecar.resources", map[string]any{
			"requests": map[string]any{"cpu": "100m", "memory": "128Mi"},
			"limits":   map[string]any{"cpu": 2, "memory": "1Gi"},
		}, "injector.sidecar.image.pullPolicy", "Always"), func(t *testing.T, r *Rendered) {
			wantProxyFlags(t, r, [4]string{"100m", "128Mi", "2", "1Gi"}, "Always")
		}},
		{"native sidecar off", vals("injector.nativeSidecar", false), func(t *testing.T, r *Rendered) {
			d := one[*appsv1.Deployment](t, r, "Deployment", injectorName)
			if f := flags(container(t, d, "injector")); f["sidecar-mode"] != "container" {
				t.Errorf("--sidecar-mode=%q", f["sidecar-mode"])
			}
		}},
		{"persistence", vals("processor.persistence.enabled", true, "processor.persistence.storageClass", "fast"), func(t *testing.T, r *Rendered) {
			pvc := one[*corev1.PersistentVolumeClaim](t, r, "PersistentVolumeClaim", processorName)
			if *pvc.Spec.StorageClassName != "fast" || pvc.Spec.Resources.Requests.Storage().String() != "5Gi" {
				t.Errorf("pvc = %+v", pvc.Spec)
			}
			d := one[*appsv1.Deployment](t, r, "Deployment", processorName)
			if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
				t.Errorf("strategy = %q: a rolling update would deadlock on the ReadWriteOnce claim", d.Spec.Strategy.Type)
			}
		}},
		{"otel and metrics", vals("otel.enabled", true, "otel.endpoint", "collector.obs:4317", "otel.insecure", true,
			"metrics.scrapeAnnotations", true),
			func(t *testing.T, r *Rendered) {
				cfg := readServeConfig(t, r)
				if tm := cfg.Telemetry; tm == nil || tm.OTLPEndpoint != "collector.obs:4317" || !tm.OTLPInsecure || tm.ServiceName != "tollgate" {
					t.Errorf("telemetry = %+v", cfg.Telemetry)
				}
				d := one[*appsv1.Deployment](t, r, "Deployment", processorName)
				if cfg.MetricsListen != "0.0.0.0:9464" || d.Spec.Template.Annotations["prometheus.io/port"] != "9464" {
					t.Errorf("metrics_listen %q, scrape annotations %v", cfg.MetricsListen, d.Spec.Template.Annotations)
				}
				svc := one[*corev1.Service](t, r, "Service", processorName)
				if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "metrics" && p.Port == 9464 }) {
					t.Errorf("service ports = %+v", svc.Spec.Ports)
				}
			}},
		{"metrics off", vals("metrics.enabled", false), func(t *testing.T, r *Rendered) {
			if cfg := readServeConfig(t, r); cfg.MetricsListen != "" {
				t.Errorf("metrics_listen = %q", cfg.MetricsListen)
			}
			svc := one[*corev1.Service](t, r, "Service", processorName)
			if len(svc.Spec.Ports) != 3 {
				t.Errorf("service ports = %+v", svc.Spec.Ports)
			}
		}},
		{"catalog overlay", vals("processor.catalog", map[string]any{"models": []any{map[string]any{"provider": "openai", "name": "gpt-3.5-turbo", "like": "gpt-4o-mini"}}}),
			func(t *testing.T, r *Rendered) {
				cm := one[*corev1.ConfigMap](t, r, "ConfigMap", processorName)
				if !strings.Contains(cm.Data["catalog.yaml"], "gpt-3.5-turbo") || readServeConfig(t, r).Catalog != "/etc/tollgate/catalog.yaml" {
					t.Errorf("catalog overlay not wired: %v", cm.Data)
				}
			}},
		{"helm test account", vals("tests.account", "acme"), func(t *testing.T, r *Rendered) {
			ns := one[*corev1.Namespace](t, r, "Namespace", "tg-tollgate-test")
			p := one[*corev1.Pod](t, r, "Pod", "tg-tollgate-gateway-test")
			if ns.Labels["tollgate.dev/inject"] != "enabled" || ns.Annotations["tollgate.dev/account"] != "acme" ||
				ns.Annotations["tollgate.dev/project"] != "helm-test" || p.Namespace != ns.Name {
				t.Errorf("test namespace %+v, pod namespace %q", ns.ObjectMeta, p.Namespace)
			}
		}},
		{"injector disabled", vals("injector.enabled", false), func(t *testing.T, r *Rendered) {
			for _, kind := range []string{"MutatingWebhookConfiguration", "ClusterRole", "Role", "Namespace", "Pod"} {
				if got := r.Find(kind, ""); len(got) != 0 {
					t.Errorf("%s rendered with the injector disabled", kind)
				}
			}
			if got := r.Find("Deployment", ""); len(got) != 1 {
				t.Errorf("deployments = %d, want the processor only", len(got))
			}
		}},
		{"long release name", vals("fullnameOverride", strings.Repeat("x", 70), "providerKeys.openai", "k"), func(t *testing.T, r *Rendered) {
			for _, o := range r.Objects {
				limit := 63
				if o.GVK.Kind == "MutatingWebhookConfiguration" || o.GVK.Kind == "ClusterRole" || o.GVK.Kind == "ClusterRoleBinding" {
					limit = 253
				}
				if len(o.Name) > limit || strings.HasSuffix(o.Name, "-") {
					t.Errorf("%s name %q is not a valid name (%d chars)", o.GVK.Kind, o.Name, len(o.Name))
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := render(t, tt.vals)
			checkRestricted(t, r)
			checkSelectors(t, r)
			tt.check(t, r)
		})
	}
}

// checkSelectors: every Deployment's selector selects its own pod template,
// and every Service and PDB selects some rendered pod template.
func checkSelectors(t *testing.T, r *Rendered) {
	t.Helper()
	matches := func(sel, labels map[string]string) bool {
		for k, v := range sel {
			if labels[k] != v {
				return false
			}
		}
		return len(sel) > 0
	}
	var templates []map[string]string
	for _, o := range r.Find("Deployment", "") {
		d := o.Typed.(*appsv1.Deployment)
		if !matches(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
			t.Errorf("deployment %s selector %v does not select its pods %v", d.Name, d.Spec.Selector.MatchLabels, d.Spec.Template.Labels)
		}
		templates = append(templates, d.Spec.Template.Labels)
	}
	selects := func(sel map[string]string) bool {
		return slices.ContainsFunc(templates, func(l map[string]string) bool { return matches(sel, l) })
	}
	for _, o := range r.Find("Service", "") {
		if s := o.Typed.(*corev1.Service); !selects(s.Spec.Selector) {
			t.Errorf("service %s selects no pods: %v", s.Name, s.Spec.Selector)
		}
	}
	for _, o := range r.Find("PodDisruptionBudget", "") {
		if p := o.Typed.(*policyv1.PodDisruptionBudget); !selects(p.Spec.Selector.MatchLabels) {
			t.Errorf("PDB %s selects no pods: %v", p.Name, p.Spec.Selector.MatchLabels)
		}
	}
}

// checkRestricted holds every pod the chart makes to the Pod Security
// Standards "restricted" profile, plus a read-only root filesystem.
func checkRestricted(t *testing.T, r *Rendered) {
	t.Helper()
	var specs []struct {
		name string
		spec corev1.PodSpec
	}
	for _, o := range r.Objects {
		switch v := o.Typed.(type) {
		case *appsv1.Deployment:
			specs = append(specs, struct {
				name string
				spec corev1.PodSpec
			}{v.Name, v.Spec.Template.Spec})
		case *corev1.Pod:
			specs = append(specs, struct {
				name string
				spec corev1.PodSpec
			}{v.Name, v.Spec})
		}
	}
	if len(specs) == 0 {
		t.Fatal("no pods rendered")
	}
	allowedVolumes := func(v corev1.Volume) bool {
		return v.ConfigMap != nil || v.Secret != nil || v.EmptyDir != nil || v.PersistentVolumeClaim != nil ||
			v.Projected != nil || v.DownwardAPI != nil || v.CSI != nil || v.Ephemeral != nil
	}
	for _, p := range specs {
		s := p.spec
		if s.HostNetwork || s.HostPID || s.HostIPC {
			t.Errorf("%s uses host namespaces", p.name)
		}
		psc := s.SecurityContext
		if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: pod seccomp profile is not RuntimeDefault", p.name)
		}
		for _, v := range s.Volumes {
			if !allowedVolumes(v) {
				t.Errorf("%s: volume %s has a type the restricted profile forbids", p.name, v.Name)
			}
		}
		for _, c := range append(append([]corev1.Container{}, s.InitContainers...), s.Containers...) {
			sc := c.SecurityContext
			switch {
			case sc == nil:
				t.Errorf("%s/%s: no securityContext", p.name, c.Name)
				continue
			case sc.Privileged != nil && *sc.Privileged:
				t.Errorf("%s/%s: privileged", p.name, c.Name)
			case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
				t.Errorf("%s/%s: allowPrivilegeEscalation is not false", p.name, c.Name)
			case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
				t.Errorf("%s/%s: root filesystem is writable", p.name, c.Name)
			case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0:
				t.Errorf("%s/%s: capabilities = %+v, want drop ALL, add none", p.name, c.Name, sc.Capabilities)
			}
			nonRoot := (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) || (psc != nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot)
			if !nonRoot {
				t.Errorf("%s/%s: runAsNonRoot is not set", p.name, c.Name)
			}
			if (sc.RunAsUser != nil && *sc.RunAsUser == 0) || (psc != nil && psc.RunAsUser != nil && *psc.RunAsUser == 0) {
				t.Errorf("%s/%s: runs as uid 0", p.name, c.Name)
			}
			if c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Memory().IsZero() {
				t.Errorf("%s/%s: no memory request and limit", p.name, c.Name)
			}
		}
	}
}

func TestSchemaRejects(t *testing.T) {
	tests := []struct {
		name string
		vals map[string]any
		want string // a fragment of the error: the offending key
	}{
		{"unknown top-level key", vals("replicas", 2), "replicas"},
		{"misspelt nested key", vals("injector.webhook.failurePolicyy", "Fail"), "failurePolicyy"},
		{"failurePolicy", vals("injector.webhook.failurePolicy", "Maybe"), "failurePolicy"},
		{"timeout too long", vals("injector.webhook.timeoutSeconds", 31), "timeoutSeconds"},
		{"timeout zero", vals("injector.webhook.timeoutSeconds", 0), "timeoutSeconds"},
		{"replicas zero", vals("processor.replicas", 0), "replicas"},
		{"replicas as string", vals("processor.replicas", "3"), "replicas"},
		{"cert mode", vals("injector.certs.mode", "letsencrypt"), "mode"},
		{"envFromPolicy", vals("injector.envFromPolicy", "override"), "envFromPolicy"},
		{"log level", vals("processor.logLevel", "verbose"), "logLevel"},
		{"port out of range", vals("processor.ports.grpc", 70000), "grpc"},
		{"redis URL not redis://", vals("redis.url", "redis.cache:6379"), "url"},
		{"redis URL with a password", vals("redis.url", "redis://:hunter2@redis.cache:6379/0"), "url"},
		{"redis failure mode", vals("redis.failureMode", "open"), "failureMode"},
		{"credits per USD", vals("processor.creditsPerUSD", "1e3"), "creditsPerUSD"},
		{"upstream not a URL", vals("processor.providers.openai.upstream", "api.openai.com"), "upstream"},
		{"header with a space", vals("processor.providers.openai.allowHeaders", []any{"x bad"}), "allowHeaders"},
		{"anthropic version", vals("processor.providers.anthropic.versions", []any{"latest"}), "versions"},
		{"removed key", vals("injector.namespaceLabel", "x"), "namespaceLabel"},
		{"exclude namespace", vals("injector.excludeNamespaces", []any{"Not_A_Namespace"}), "excludeNamespaces"},
		{"token ttl", vals("injector.tokens.ttl", "30 days"), "ttl"},
		{"image digest", vals("image.digest", "latest"), "digest"},
		{"pull policy", vals("image.pullPolicy", "Sometimes"), "pullPolicy"},
		{"otel endpoint", vals("otel.endpoint", "collector"), "endpoint"},
		{"unknown catalog key", vals("processor.catalog", map[string]any{"modles": []any{}}), "modles"},
		{"sidecar port privileged", vals("injector.sidecar.port", 80), "port"},
		{"hpa percentage", vals("processor.autoscaling.targetCPUUtilizationPercentage", 0), "targetCPUUtilizationPercentage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Render(tt.vals)
			if err == nil {
				t.Fatal("rendered; want a schema error")
			}
			if !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error does not name the schema and %q:\n%v", tt.want, err)
			}
		})
	}
}

func TestTemplateRefuses(t *testing.T) {
	tests := []struct {
		name string
		vals map[string]any
		want string
	}{
		{"replicas without shared stores", vals("processor.replicas", 3), "needs redis.enabled and postgres.enabled"},
		{"replicas with redis only", vals("processor.replicas", 2, "redis.enabled", true, "redis.url", "redis://r:6379"), "needs redis.enabled and postgres.enabled"},
		{"HPA without shared stores", vals("processor.autoscaling.enabled", true), "needs redis.enabled and postgres.enabled"},
		{"persistence with replicas", vals(append(shared, "processor.replicas", 2, "processor.persistence.enabled", true)...), "single-replica"},
		{"redis without URL", vals("redis.enabled", true), "redis.url or redis.existingSecret"},
		{"redis URL twice", vals("redis.url", "redis://r:6379", "redis.existingSecret", "s"), "not both"},
		{"postgres without secret", vals("postgres.enabled", true), "postgres.existingSecret"},
		{"otel without endpoint", vals("otel.enabled", true), "otel.endpoint"},
		{"existingSecret and keys", vals("providerKeys.existingSecret", "k", "providerKeys.openai", "sk-x"), "not both"},
		{"PDB with both bounds", vals("processor.podDisruptionBudget.minAvailable", 1), "not both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Render(tt.vals)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestLint(t *testing.T) {
	for _, v := range []map[string]any{
		nil,
		vals(append(shared, "processor.replicas", 3, "injector.certs.mode", "certManager")...),
		vals("providerKeys.existingSecret", "keys", "otel.enabled", true, "otel.endpoint", "http://c:4317", "metrics.enabled", false),
	} {
		l := action.NewLint()
		l.Namespace = Namespace
		l.KubeVersion = &KubeVersion
		res := l.Run([]string{Dir()}, v)
		for _, err := range res.Errors {
			t.Errorf("lint %v: %v", v, err)
		}
		for _, m := range res.Messages {
			if m.Severity >= support.WarningSev {
				t.Errorf("lint %v: %s", v, m)
			}
		}
	}
}

// TestRBACRules lists every permission the chart grants and why. The
// rendered rules must be exactly these: a new verb needs a reason here.
// perm is one verb on one resource (and name) granted by a Role or ClusterRole.
type perm struct{ kind, group, resource, verb, name string }

func rbacPerms(r *Rendered) map[perm]bool {
	got := map[perm]bool{}
	for _, o := range r.Objects {
		var rules []rbacv1.PolicyRule
		switch v := o.Typed.(type) {
		case *rbacv1.ClusterRole:
			rules = v.Rules
		case *rbacv1.Role:
			rules = v.Rules
		default:
			continue
		}
		for _, rule := range rules {
			names := rule.ResourceNames
			if len(names) == 0 {
				names = []string{""}
			}
			for _, g := range rule.APIGroups {
				for _, res := range rule.Resources {
					for _, verb := range rule.Verbs {
						for _, n := range names {
							got[perm{o.GVK.Kind, g, res, verb, n}] = true
						}
					}
				}
			}
		}
	}
	return got
}

func TestRBACRules(t *testing.T) {
	want := map[perm]string{
		{"ClusterRole", "", "namespaces", "get", ""}:                                                            "read a namespace's opt-in label, account and project, and variable defaults",
		{"ClusterRole", "", "namespaces", "list", ""}:                                                           "token controller: find every opted-in namespace at start",
		{"ClusterRole", "", "namespaces", "watch", ""}:                                                          "token controller: react to namespaces being labelled and unlabelled",
		{"ClusterRole", "", "configmaps", "get", ""}:                                                            "envFrom ConfigMaps: their keys decide whether a variable is already defined (one GET per source)",
		{"ClusterRole", "", "secrets", "create", ""}:                                                            "token controller: make a namespace's token Secret (create cannot be limited by name)",
		{"ClusterRole", "", "secrets", "get", "tollgate-gateway-token"}:                                         "token controller: read a namespace's token Secret (one GET by name per reconcile)",
		{"ClusterRole", "", "secrets", "update", "tollgate-gateway-token"}:                                      "token controller: rotate the token before it expires",
		{"ClusterRole", "", "secrets", "delete", "tollgate-gateway-token"}:                                      "token controller: remove the token when a namespace opts out",
		{"ClusterRole", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "get", webhookName}:    "read its own webhook configuration's caBundle (every 30 s)",
		{"ClusterRole", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "update", webhookName}: "write its CA into its own webhook configuration, again if something resets it",
		{"Role", "coordination.k8s.io", "leases", "create", ""}:                                                 "token controller leader election: the first replica creates the Lease",
		{"Role", "coordination.k8s.io", "leases", "get", "tollgate-injector-controller"}:                        "leader election: read who holds the Lease",
		{"Role", "coordination.k8s.io", "leases", "update", "tollgate-injector-controller"}:                     "leader election: take or renew the Lease",
		{"Role", "", "secrets", "create", ""}:                                                                   "webhook TLS: the first replica stores the CA and serving certificate",
		{"Role", "", "secrets", "get", "tg-tollgate-injector-tls"}:                                              "webhook TLS: the other replicas read the shared certificate",
		{"Role", "", "secrets", "update", "tg-tollgate-injector-tls"}:                                           "webhook TLS: rotate the certificate before it expires",
	}
	// Values that change the grants: each case says what it adds or removes.
	cases := []struct {
		name   string
		vals   map[string]any
		add    map[perm]string
		remove func(p perm) bool
	}{
		{name: "defaults"},
		{name: "readEnvFromSecrets", vals: vals("injector.readEnvFromSecrets", true),
			add: map[perm]string{{"ClusterRole", "", "secrets", "get", ""}: "envFrom Secrets' key names, opted in by the operator"}},
		{name: "certManager", vals: vals("injector.certs.mode", "certManager"),
			// cert-manager owns the TLS Secret and the caBundle.
			remove: func(p perm) bool {
				return p.resource == "secrets" && p.kind == "Role" || p.resource == "mutatingwebhookconfigurations"
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			expect := map[perm]string{}
			for p, why := range want {
				if c.remove == nil || !c.remove(p) {
					expect[p] = why
				}
			}
			for p, why := range c.add {
				expect[p] = why
			}
			got := rbacPerms(render(t, c.vals))
			for p := range got {
				if _, ok := expect[p]; !ok {
					t.Errorf("rendered %+v has no reason in this table", p)
				}
			}
			for p, why := range expect {
				if why == "" {
					t.Errorf("%+v has an empty reason", p)
				}
				if !got[p] {
					t.Errorf("%+v (%s) is not rendered", p, why)
				}
			}
		})
	}
	r := render(t, nil)
	// The bindings give those roles to the injector's account and no one else.
	for _, kind := range []string{"ClusterRoleBinding", "RoleBinding"} {
		for _, o := range r.Find(kind, "") {
			var subjects []rbacv1.Subject
			if b, ok := o.Typed.(*rbacv1.ClusterRoleBinding); ok {
				subjects = b.Subjects
			} else {
				subjects = o.Typed.(*rbacv1.RoleBinding).Subjects
			}
			if len(subjects) != 1 || subjects[0].Kind != "ServiceAccount" || subjects[0].Name != injectorName || subjects[0].Namespace != Namespace {
				t.Errorf("%s %s subjects = %+v", kind, o.Name, subjects)
			}
		}
	}
	// The processor calls no API: no role, and no token mounted.
	d := one[*appsv1.Deployment](t, r, "Deployment", processorName)
	if a := d.Spec.Template.Spec.AutomountServiceAccountToken; a == nil || *a {
		t.Errorf("processor mounts a service account token")
	}
}

// TestNoProviderKeyInRender: a key given in values appears only in the
// Secret that holds it, never in any other object, hook or the NOTES.
func TestNoProviderKeyInRender(t *testing.T) {
	keys := map[string]string{
		"openai":    "sk-canary-openai-5f1c9a",
		"anthropic": "sk-ant-canary-77d2e0",
		"gemini":    "AIzaCanaryGemini3b8d",
	}
	v := vals("providerKeys.openai", keys["openai"], "providerKeys.anthropic", keys["anthropic"], "providerKeys.gemini", keys["gemini"])
	r := render(t, v)
	holders := 0
	for _, o := range r.Objects {
		for p, k := range keys {
			b64 := base64.StdEncoding.EncodeToString([]byte(k))
			in := strings.Contains(string(o.YAML), k) || strings.Contains(string(o.YAML), b64)
			if o.GVK.Kind == "Secret" && o.Name == "tg-tollgate-provider-keys" {
				holders++
				if s := o.Typed.(*corev1.Secret); string(s.Data[p]) != k {
					t.Errorf("the keys Secret does not hold the %s key", p)
				}
				continue
			}
			if in {
				t.Errorf("%s key appears in %s %s", p, o.GVK.Kind, o.Name)
			}
		}
	}
	if holders != len(keys) {
		t.Errorf("keys Secret seen %d times, want one per key", holders)
	}
	for p, k := range keys {
		if strings.Contains(r.Notes, k) || strings.Contains(r.Notes, base64.StdEncoding.EncodeToString([]byte(k))) {
			t.Errorf("NOTES print the %s key", p)
		}
	}
}

// checkSigningKey: a chart-made key is what auth.LoadKeyDir reads, a
// PKCS#8 PEM ed25519 private key.
func checkSigningKey(t *testing.T, name string, data []byte) {
	t.Helper()
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" || len(strings.TrimSpace(string(rest))) != 0 {
		t.Fatalf("%s is not one PEM PRIVATE KEY block", name)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if _, ok := key.(ed25519.PrivateKey); !ok {
		t.Fatalf("%s holds a %T, want an ed25519 key", name, key)
	}
}

// checkSigningKeysMounted: the processor mounts every entry of secret,
// read only, at the directory its config names as signing_keys_dir.
func checkSigningKeysMounted(t *testing.T, r *Rendered, secret string) {
	t.Helper()
	d := one[*appsv1.Deployment](t, r, "Deployment", processorName)
	c := container(t, d, "processor")
	cfg := readServeConfig(t, r)
	if cfg.SigningKeysDir == "" {
		t.Fatal("serve config has no signing_keys_dir")
	}
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Secret == nil || v.Secret.SecretName != secret {
			continue
		}
		if len(v.Secret.Items) != 0 {
			t.Errorf("signing keys volume picks items %v: a key added for rotation would not be mounted", v.Secret.Items)
		}
		for _, m := range c.VolumeMounts {
			if m.Name == v.Name && m.MountPath == cfg.SigningKeysDir && m.ReadOnly && m.SubPath == "" {
				return
			}
		}
	}
	t.Errorf("Secret %s is not mounted read only at signing_keys_dir %s", secret, cfg.SigningKeysDir)
}

// TestNoSigningKeyInRender: the chart-made signing key appears only in its
// Secret: in no other object, and not in the NOTES.
func TestNoSigningKeyInRender(t *testing.T) {
	r := render(t, vals(append(shared, "processor.replicas", 3)...))
	s := one[*corev1.Secret](t, r, "Secret", "tg-tollgate-signing-keys")
	var needles []string
	for _, data := range s.Data {
		block, _ := pem.Decode(data)
		if block == nil {
			t.Fatal("no PEM in the signing-keys Secret")
		}
		needles = append(needles, string(data), base64.StdEncoding.EncodeToString(data),
			base64.StdEncoding.EncodeToString(block.Bytes), strings.Split(string(data), "\n")[1])
	}
	holders := 0
	for _, o := range r.Objects {
		if o.GVK.Kind == "Secret" && o.Name == s.Name {
			holders++
			continue
		}
		for _, n := range needles {
			if strings.Contains(string(o.YAML), n) {
				t.Errorf("the signing key appears in %s %s", o.GVK.Kind, o.Name)
			}
		}
	}
	for _, n := range needles {
		if strings.Contains(r.Notes, n) {
			t.Error("NOTES print the signing key")
		}
	}
	if holders != 1 {
		t.Errorf("signing-keys Secret rendered %d times", holders)
	}
}

// Every processor replica reads one prompt cache secret from the admin
// token Secret; the injector, which reads that Secret's token, never gets it.
func TestPromptCacheKeyShared(t *testing.T) {
	r := render(t, vals(append(shared, "processor.replicas", 3)...))
	const envName = "TOLLGATE_PROMPT_CACHE_KEY"
	proc := container(t, one[*appsv1.Deployment](t, r, "Deployment", processorName), "processor")
	var ref *corev1.SecretKeySelector
	for _, e := range proc.Env {
		if e.Name == envName && e.ValueFrom != nil {
			ref = e.ValueFrom.SecretKeyRef
		}
	}
	if ref == nil || ref.Key != "prompt-cache-key" {
		t.Fatalf("processor env %s: %+v, want a secretKeyRef to prompt-cache-key", envName, ref)
	}
	s := one[*corev1.Secret](t, r, "Secret", ref.Name)
	if v := s.Data["prompt-cache-key"]; len(v) < 32 {
		t.Fatalf("prompt-cache-key holds %d bytes, want at least 32 random characters", len(v))
	}
	inj := one[*appsv1.Deployment](t, r, "Deployment", injectorName)
	for _, v := range inj.Spec.Template.Spec.Volumes {
		if v.Secret == nil || v.Secret.SecretName != s.Name {
			continue
		}
		if len(v.Secret.Items) == 0 {
			t.Errorf("injector volume %s mounts the whole admin token Secret, prompt cache secret included", v.Name)
		}
		for _, it := range v.Secret.Items {
			if it.Key == "prompt-cache-key" {
				t.Errorf("injector volume %s mounts the prompt cache secret", v.Name)
			}
		}
	}
	for _, c := range inj.Spec.Template.Spec.Containers {
		for _, e := range c.Env {
			if e.Name == envName || e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Key == "prompt-cache-key" {
				t.Errorf("injector container %s gets the prompt cache secret", c.Name)
			}
		}
	}
}

// wantProxyFlags checks the sidecar's resources (requests cpu and memory,
// limits cpu and memory) and pull policy as the injector's flags carry them.
func wantProxyFlags(t *testing.T, r *Rendered, res [4]string, pullPolicy string) {
	t.Helper()
	f := flags(container(t, one[*appsv1.Deployment](t, r, "Deployment", injectorName), "injector"))
	var got corev1.ResourceRequirements
	if err := json.Unmarshal([]byte(f["proxy-resources"]), &got); err != nil {
		t.Fatalf("--proxy-resources=%q: %v", f["proxy-resources"], err)
	}
	if have := [4]string{got.Requests.Cpu().String(), got.Requests.Memory().String(), got.Limits.Cpu().String(), got.Limits.Memory().String()}; have != res {
		t.Errorf("--proxy-resources=%s: requests %s/%s, limits %s/%s; want %s/%s, %s/%s", f["proxy-resources"], have[0], have[1], have[2], have[3], res[0], res[1], res[2], res[3])
	}
	if f["proxy-image-pull-policy"] != pullPolicy {
		t.Errorf("--proxy-image-pull-policy=%q, want %q", f["proxy-image-pull-policy"], pullPolicy)
	}
}
