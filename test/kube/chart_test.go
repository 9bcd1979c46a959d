package kube_test

import (
	"context"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/tollgate-dev/tollgate/test/chart"
	"github.com/tollgate-dev/tollgate/test/kube"
)

func TestMain(m *testing.M) { os.Exit(kube.Main(m)) }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// apply creates every rendered object (hooks included) through the API
// server with strict field validation, so the server's own validation and
// defaulting judge the chart. cert-manager kinds are skipped (no CRDs
// here); dryRunKinds are only dry-run (a MutatingWebhookConfiguration
// pointing at a Service that has no endpoints would block pod creation).
func apply(t *testing.T, env *kube.Env, r *chart.Rendered, dryRunKinds ...string) {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	// Namespaces first: the hooks' test namespace holds the test pod.
	ordered := append([]chart.Object{}, r.Objects...)
	for i, o := range ordered {
		if o.GVK.Kind == "Namespace" {
			ordered[0], ordered[i] = ordered[i], ordered[0]
		}
	}
	for _, o := range ordered {
		if o.GVK.Group == "cert-manager.io" {
			continue
		}
		var u unstructured.Unstructured
		if err := yaml.Unmarshal(o.YAML, &u.Object); err != nil {
			t.Fatalf("%s: %v", o.Template, err)
		}
		m, err := mapper.RESTMapping(o.GVK.GroupKind(), o.GVK.Version)
		if err != nil {
			t.Fatalf("%s %s: %v", o.GVK, o.Name, err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ri = dyn.Resource(m.Resource).Namespace(u.GetNamespace())
		}
		opts := metav1.CreateOptions{FieldValidation: "Strict"}
		for _, k := range dryRunKinds {
			if k == o.GVK.Kind {
				opts.DryRun = []string{metav1.DryRunAll}
			}
		}
		if _, err := ri.Create(ctx(t), &u, opts); err != nil {
			t.Errorf("create %s %s/%s: %v", o.GVK.Kind, u.GetNamespace(), o.Name, err)
		}
	}
}

func createNamespace(t *testing.T, c kubernetes.Interface, name string, labels map[string]string) {
	t.Helper()
	_, err := c.CoreV1().Namespaces().Create(ctx(t), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// TestChartAppliesToAPIServer: the API server accepts every object the
// chart renders, for several value sets, with unknown fields refused.
func TestChartAppliesToAPIServer(t *testing.T) {
	env := kube.Shared(t)
	for i, v := range []map[string]any{
		nil,
		{"providerKeys": map[string]any{"openai": "sk-x"}, "processor": map[string]any{"persistence": map[string]any{"enabled": true}},
			"otel": map[string]any{"enabled": true, "endpoint": "http://c:4317"}},
		{"processor": map[string]any{"replicas": 3, "autoscaling": map[string]any{"enabled": true}},
			"redis":    map[string]any{"enabled": true, "existingSecret": "r"},
			"postgres": map[string]any{"enabled": true, "existingSecret": "pg"}, "injector": map[string]any{"nativeSidecar": false}},
	} {
		release := []string{"apply-a", "apply-b", "apply-c"}[i]
		ns := release + "-system"
		r, err := chart.RenderAs(release, ns, v)
		if err != nil {
			t.Fatal(err)
		}
		createNamespace(t, env.Client, ns, nil)
		apply(t, env, r, "MutatingWebhookConfiguration")
	}
}
