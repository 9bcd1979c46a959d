package kube_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"

	"github.com/tollgate-dev/tollgate/injector/adminapi"
	"github.com/tollgate-dev/tollgate/injector/controller"
	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/test/chart"
	"github.com/tollgate-dev/tollgate/test/harness"
	"github.com/tollgate-dev/tollgate/test/kube"
)

// TestTokenControllerOnAPIServer runs the real token controller, configured
// by the chart's injector flags and acting as the injector's ServiceAccount
// under the chart's RBAC, against the real API server and a real `tollgate
// serve` admin API: an opted-in namespace gets a token Secret whose token
// the gateway accepts; opting out deletes the Secret and revokes the token.
func TestTokenControllerOnAPIServer(t *testing.T) {
	env := kube.Shared(t)
	const release, ns = "ctl", "ctl-system"
	r, err := chart.RenderAs(release, ns, nil)
	if err != nil {
		t.Fatal(err)
	}
	createNamespace(t, env.Client, ns, nil)
	apply(t, env, r, "MutatingWebhookConfiguration", "Pod")
	flags := injectorFlags(t, r, release+"-tollgate-injector")
	ttl, err1 := time.ParseDuration(flags["token-ttl"])
	rotate, err2 := time.ParseDuration(flags["token-rotate-before"])
	if err1 != nil || err2 != nil {
		t.Fatalf("token flags %q %q: %v %v", flags["token-ttl"], flags["token-rotate-before"], err1, err2)
	}

	// The processor, with an account and an activated project.
	dataDir := t.TempDir()
	harness.Run(t, "account", "create", "acme", "--plan", "pro", "--credits", "10", "--data-dir", dataDir)
	harness.Run(t, "project", "create", "shop", "--account", "acme", "--activate", "--data-dir", dataDir)
	cfg := filepath.Join(dataDir, "serve.yaml")
	if err := os.WriteFile(cfg, []byte("log_level: info\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const adminToken = "controller-test-admin-token"
	proc := harness.StartServe(t, cfg, []string{"TOLLGATE_ADMIN_TOKEN=" + adminToken},
		"--data-dir", dataDir, "--admin-listen", "127.0.0.1:0")
	m := regexp.MustCompile(`msg="admin API" addr=(\S+)`).FindStringSubmatch(proc.Stderr())
	if m == nil {
		t.Fatalf("no admin API address in the log:\n%s", proc.Stderr())
	}
	api, err := adminapi.New("http://"+m[1], adminToken, nil)
	if err != nil {
		t.Fatal(err)
	}

	// The controller, as the injector's ServiceAccount.
	as, err := kubernetes.NewForConfig(env.Impersonate("system:serviceaccount:"+ns+":"+release+"-tollgate-injector",
		"system:serviceaccounts", "system:serviceaccounts:"+ns, "system:authenticated"))
	if err != nil {
		t.Fatal(err)
	}
	factory := informers.NewSharedInformerFactory(as, time.Second)
	ctrl, err := controller.New(controller.Config{SecretName: flags["token-secret"], OwnNamespace: ns, TTL: ttl, RotateBefore: rotate},
		as, factory, api, api, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	t.Cleanup(func() { cancel(); <-done })
	factory.Start(ctx.Done())
	go func() { done <- ctrl.Run(ctx, 2) }()

	_, err = env.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:        "shop",
		Labels:      map[string]string{"tollgate.dev/inject": "enabled"},
		Annotations: map[string]string{"tollgate.dev/account": "acme", "tollgate.dev/project": "shop"},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	secrets := env.Client.CoreV1().Secrets("shop")
	var sec *corev1.Secret
	var getErr error
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		sec, getErr = secrets.Get(ctx, flags["token-secret"], metav1.GetOptions{})
		return getErr == nil, nil
	}); err != nil {
		t.Fatalf("no token Secret in the opted-in namespace: %v (last error %v)", err, getErr)
	}
	token := string(sec.Data["token"])
	claims, err := auth.Parse(token)
	if err != nil || claims.Account != "acme" || claims.Project != "shop" {
		t.Fatalf("token claims = %+v, %v", claims, err)
	}
	if life := time.Until(claims.ExpiresAt); life < ttl-time.Minute || life > ttl+time.Minute {
		t.Errorf("token lives %v, chart says %v", life, ttl)
	}
	if sec.Labels["app.kubernetes.io/managed-by"] != "tollgate-injector" || sec.Annotations["tollgate.dev/token-id"] != claims.TokenID {
		t.Errorf("secret metadata: labels %v annotations %v", sec.Labels, sec.Annotations)
	}
	status := func() int { return harness.GetStatus(t, proc.URL+"/openai/v1/models/gpt-4o-mini", token) }
	if got := status(); got != http.StatusOK {
		t.Errorf("the gateway answers the namespace's token with %d", got)
	}

	// The release namespace never gets one.
	if _, err := env.Client.CoreV1().Secrets(ns).Get(ctx, flags["token-secret"], metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("token Secret in the injector's own namespace: %v", err)
	}

	// Opting out withdraws it: token revoked, the Secret kept and marked
	// (injected pods reference it; a restart must not fail on it).
	if _, err := env.Client.CoreV1().Namespaces().Patch(ctx, "shop", types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"tollgate.dev/inject":null}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		sec, err := secrets.Get(ctx, flags["token-secret"], metav1.GetOptions{})
		return err == nil && sec.Annotations["tollgate.dev/withdrawn"] == "namespace opted out", nil
	}); err != nil {
		t.Fatalf("token Secret not marked withdrawn after opting out: %v", err)
	}
	// The gateway re-reads the revocation list within a second.
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return status() == http.StatusUnauthorized, nil
	}); err != nil {
		t.Errorf("the revoked token is still accepted (%d)", status())
	}
}
