package kube_test

import (
	"context"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/tollgate-dev/tollgate/test/chart"
	"github.com/tollgate-dev/tollgate/test/kube"
)

// TestInjectorRBAC installs the chart's roles in the real API server and
// acts as the injector's ServiceAccount: everything the injector does is
// allowed, and the nearest things it must not do are forbidden.
func TestInjectorRBAC(t *testing.T) {
	env := kube.Shared(t)
	const release, ns = "rbac", "rbac-system"
	r, err := chart.RenderAs(release, ns, nil)
	if err != nil {
		t.Fatal(err)
	}
	createNamespace(t, env.Client, ns, nil)
	apply(t, env, r, "MutatingWebhookConfiguration", "Pod")
	// The real webhook configuration, and a stranger's.
	mwcName := "rbac-tollgate-injector." + ns
	for _, name := range []string{mwcName, "someone-elses-webhook"} {
		_, err := env.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx(t),
			&admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	createNamespace(t, env.Client, "rbac-app", map[string]string{"tollgate.dev/inject": "enabled"})
	for _, s := range []string{"tollgate-gateway-token", "app-credentials"} {
		mustCreateSecret(t, env.Client, "rbac-app", s)
	}
	mustCreateSecret(t, env.Client, ns, "some-other-secret")
	if _, err := env.Client.CoreV1().ConfigMaps("rbac-app").Create(ctx(t), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "app-config"}, Data: map[string]string{"OPENAI_API_KEY": "x"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	as, err := kubernetes.NewForConfig(env.Impersonate("system:serviceaccount:"+ns+":rbac-tollgate-injector",
		"system:serviceaccounts", "system:serviceaccounts:"+ns, "system:authenticated"))
	if err != nil {
		t.Fatal(err)
	}
	tokenSel := metav1.ListOptions{FieldSelector: "metadata.name=tollgate-gateway-token"}
	patch := []byte(`{"metadata":{"annotations":{"tollgate.dev/touched":"x"}}}`)
	secret := func(ns, name string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, StringData: map[string]string{"k": "v"}}
	}
	tests := []struct {
		name  string
		allow bool
		do    func(ctx context.Context) error
	}{
		{"list namespaces", true, func(c context.Context) error {
			_, err := as.CoreV1().Namespaces().List(c, metav1.ListOptions{})
			return err
		}},
		{"watch namespaces", true, func(c context.Context) error {
			w, err := as.CoreV1().Namespaces().Watch(c, metav1.ListOptions{})
			if err == nil {
				w.Stop()
			}
			return err
		}},
		{"update a namespace", false, func(c context.Context) error {
			_, err := as.CoreV1().Namespaces().Patch(c, "rbac-app", types.MergePatchType, patch, metav1.PatchOptions{})
			return err
		}},
		{"get an envFrom configmap", true, func(c context.Context) error {
			_, err := as.CoreV1().ConfigMaps("rbac-app").Get(c, "app-config", metav1.GetOptions{})
			return err
		}},
		{"list configmaps everywhere", false, func(c context.Context) error {
			_, err := as.CoreV1().ConfigMaps("").List(c, metav1.ListOptions{})
			return err
		}},
		{"create a configmap", false, func(c context.Context) error {
			_, err := as.CoreV1().ConfigMaps("rbac-app").Create(c, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
			return err
		}},
		{"create the token secret", true, func(c context.Context) error {
			_, err := as.CoreV1().Secrets("default").Create(c, secret("default", "tollgate-gateway-token"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		}},
		{"get the token secret", true, func(c context.Context) error {
			_, err := as.CoreV1().Secrets("rbac-app").Get(c, "tollgate-gateway-token", metav1.GetOptions{})
			return err
		}},
		{"update the token secret", true, func(c context.Context) error {
			_, err := as.CoreV1().Secrets("rbac-app").Update(c, secret("rbac-app", "tollgate-gateway-token"), metav1.UpdateOptions{})
			return err
		}},
		{"delete the token secret", true, func(c context.Context) error {
			return as.CoreV1().Secrets("rbac-app").Delete(c, "tollgate-gateway-token", metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		}},
		{"list token secrets in all namespaces by name", false, func(c context.Context) error {
			_, err := as.CoreV1().Secrets("").List(c, tokenSel)
			return err
		}},
		{"watch token secrets in all namespaces by name", false, func(c context.Context) error {
			w, err := as.CoreV1().Secrets("").Watch(c, tokenSel)
			if err == nil {
				w.Stop()
			}
			return err
		}},
		{"read a workload's secret", false, func(c context.Context) error {
			_, err := as.CoreV1().Secrets("rbac-app").Get(c, "app-credentials", metav1.GetOptions{})
			return err
		}},
		{"list all secrets", false, func(c context.Context) error {
			_, err := as.CoreV1().Secrets("").List(c, metav1.ListOptions{})
			return err
		}},
		{"update a workload's secret", false, func(c context.Context) error {
			_, err := as.CoreV1().Secrets("rbac-app").Update(c, secret("rbac-app", "app-credentials"), metav1.UpdateOptions{})
			return err
		}},
		{"get its webhook configuration", true, func(c context.Context) error {
			_, err := as.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(c, mwcName, metav1.GetOptions{})
			return err
		}},
		{"update its webhook configuration", true, func(c context.Context) error {
			api := as.AdmissionregistrationV1().MutatingWebhookConfigurations()
			m, err := api.Get(c, mwcName, metav1.GetOptions{})
			if err != nil {
				return err
			}
			_, err = api.Update(c, m, metav1.UpdateOptions{})
			return err
		}},
		{"update another webhook configuration", false, func(c context.Context) error {
			m, err := env.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(c, "someone-elses-webhook", metav1.GetOptions{})
			if err != nil {
				return err
			}
			_, err = as.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(c, m, metav1.UpdateOptions{})
			return err
		}},
		{"list webhook configurations", false, func(c context.Context) error {
			_, err := as.AdmissionregistrationV1().MutatingWebhookConfigurations().List(c, metav1.ListOptions{})
			return err
		}},
		{"take the controller lease", true, func(c context.Context) error {
			l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "tollgate-injector-controller", Namespace: ns}}
			if _, err := as.CoordinationV1().Leases(ns).Create(c, l, metav1.CreateOptions{}); err != nil {
				return err
			}
			got, err := as.CoordinationV1().Leases(ns).Get(c, l.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			_, err = as.CoordinationV1().Leases(ns).Update(c, got, metav1.UpdateOptions{})
			return err
		}},
		{"update another lease", false, func(c context.Context) error {
			l, err := env.Client.CoordinationV1().Leases(ns).Create(c, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "other-lease"}}, metav1.CreateOptions{})
			if err != nil {
				return err
			}
			_, err = as.CoordinationV1().Leases(ns).Update(c, l, metav1.UpdateOptions{})
			return err
		}},
		{"delete its webhook configuration", false, func(c context.Context) error {
			return as.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(c, mwcName, metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		}},
		{"create the TLS secret in its namespace", true, func(c context.Context) error {
			_, err := as.CoreV1().Secrets(ns).Create(c, secret(ns, "rbac-tollgate-injector-tls"), metav1.CreateOptions{})
			return err
		}},
		{"update the TLS secret", true, func(c context.Context) error {
			_, err := as.CoreV1().Secrets(ns).Update(c, secret(ns, "rbac-tollgate-injector-tls"), metav1.UpdateOptions{})
			return err
		}},
		{"read another secret in its namespace", false, func(c context.Context) error {
			_, err := as.CoreV1().Secrets(ns).Get(c, "some-other-secret", metav1.GetOptions{})
			return err
		}},
		{"read the provider keys", false, func(c context.Context) error {
			_, err := as.CoreV1().Secrets(ns).Get(c, "rbac-tollgate-provider-keys", metav1.GetOptions{})
			return err
		}},
		{"create pods", false, func(c context.Context) error {
			_, err := as.CoreV1().Pods("rbac-app").Create(c, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}}, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.do(ctx(t))
			switch {
			case tt.allow && err != nil:
				t.Errorf("refused: %v", err)
			case !tt.allow && !apierrors.IsForbidden(err):
				t.Errorf("want Forbidden, got %v", err)
			}
		})
	}
}

func mustCreateSecret(t *testing.T, c kubernetes.Interface, ns, name string) {
	t.Helper()
	_, err := c.CoreV1().Secrets(ns).Create(ctx(t), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name}, StringData: map[string]string{"k": "v"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}
