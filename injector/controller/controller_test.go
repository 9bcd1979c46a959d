package controller

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/test/logbuf"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/tollgate-dev/tollgate/injector"
	"github.com/tollgate-dev/tollgate/injector/adminapi"
	"github.com/tollgate-dev/tollgate/injector/internal/processortest"
	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/catalog"
)

const secretName = "tollgate-gateway-token"

var testCfg = Config{SecretName: secretName, OwnNamespace: "tollgate-system", TTL: 90 * 24 * time.Hour, RotateBefore: 45 * 24 * time.Hour}

type env struct {
	t      *testing.T
	proc   *processortest.Processor
	client *fake.Clientset
	ctrl   *Controller
	logs   *logbuf.Buffer
	now    time.Time
	ctx    context.Context
}

func newEnv(t *testing.T, objects ...*corev1.Namespace) *env {
	t.Helper()
	ctx := context.Background()
	proc := processortest.Start(t)
	for _, a := range []struct {
		id      string
		enabled bool
	}{{"acme", true}, {"globex", true}, {"frozen", false}} {
		if _, err := proc.Store.CreateAccount(ctx, a.id, catalog.PlanPro, 1000); err != nil {
			t.Fatal(err)
		}
		if !a.enabled {
			if err := proc.Store.SetEnabled(ctx, a.id, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, p := range [][2]string{{"shop", "acme"}, {"fn", "acme"}, {"rival", "globex"}, {"ice", "frozen"}} {
		if _, err := proc.Store.CreateProject(ctx, p[0], p[1], true); err != nil {
			t.Fatal(err)
		}
	}
	client := fake.NewClientset()
	for _, ns := range objects {
		if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	api, err := adminapi.New(proc.URL, processortest.AdminToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logbuf.Buffer{}
	factory := informers.NewSharedInformerFactory(client, 0)
	ctrl, err := New(testCfg, client, factory, api, api, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, proc: proc, client: client, ctrl: ctrl, logs: logs, now: time.Now(), ctx: ctx}
	ctrl.now = func() time.Time { return e.now }
	runCtx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	factory.Start(runCtx.Done())
	factory.WaitForCacheSync(runCtx.Done())
	return e
}

func optedIn(name, account, project string) *corev1.Namespace {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name,
		Labels: map[string]string{injector.LabelInject: injector.ValueEnabled, injector.KeyAccount: account}}}
	if project != "" {
		ns.Annotations = map[string]string{injector.KeyProject: project}
	}
	return ns
}

// setNamespace updates a namespace and waits until the informer sees it.
func (e *env) setNamespace(ns *corev1.Namespace) {
	e.t.Helper()
	if _, err := e.client.CoreV1().Namespaces().Update(e.ctx, ns, metav1.UpdateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if got, err := e.ctrl.namespaces.Get(ns.Name); err == nil && maps.Equal(got.Labels, ns.Labels) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.t.Fatal("informer never saw the namespace update")
}

func (e *env) reconcile(name string) error {
	e.t.Helper()
	return e.ctrl.Reconcile(e.ctx, name)
}

func (e *env) secret(ns string) *corev1.Secret {
	e.t.Helper()
	s, err := e.client.CoreV1().Secrets(ns).Get(e.ctx, secretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// token returns the Secret's token, checked by the processor's verifier.
func (e *env) token(ns string) auth.Claims {
	e.t.Helper()
	s := e.secret(ns)
	if s == nil {
		e.t.Fatalf("no token Secret in %s", ns)
	}
	c, err := e.proc.Verifier.Verify(string(s.Data[injector.TokenSecretKey]), time.Now())
	if err != nil {
		e.t.Fatalf("the processor refuses the Secret's token: %v", err)
	}
	if s.Annotations[AnnotationTokenID] != c.TokenID || s.Labels[LabelManagedBy] != ManagedBy {
		e.t.Errorf("Secret metadata %v %v does not describe token %s", s.Labels, s.Annotations, c.TokenID)
	}
	return c
}

func TestMintOnOptIn(t *testing.T) {
	e := newEnv(t, optedIn("web", "acme", "shop"), optedIn("fn", "acme", ""))
	for _, ns := range []string{"web", "fn"} {
		if err := e.reconcile(ns); err != nil {
			t.Fatal(err)
		}
	}
	if c := e.token("web"); c.Account != "acme" || c.Project != "shop" || c.ExpiresAt.Sub(c.IssuedAt) != testCfg.TTL {
		t.Errorf("web token %+v, want acme/shop for %v", c, testCfg.TTL)
	}
	if c := e.token("fn"); c.Project != "fn" {
		t.Errorf("fn token project %q, want the namespace name", c.Project)
	}
	// A second pass changes nothing.
	before := e.secret("web").ResourceVersion
	if err := e.reconcile("web"); err != nil {
		t.Fatal(err)
	}
	if e.secret("web").ResourceVersion != before {
		t.Error("a valid token was replaced")
	}
	if strings.Contains(e.logs.String(), "tg1.") {
		t.Errorf("a token reached the logs:\n%s", e.logs.String())
	}
}

func TestRotation(t *testing.T) {
	e := newEnv(t, optedIn("web", "acme", "shop"))
	if err := e.reconcile("web"); err != nil {
		t.Fatal(err)
	}
	first := e.token("web")
	firstToken := string(e.secret("web").Data[injector.TokenSecretKey])

	e.now = e.now.Add(testCfg.TTL - testCfg.RotateBefore - time.Hour) // not yet due
	if err := e.reconcile("web"); err != nil {
		t.Fatal(err)
	}
	if e.token("web").TokenID != first.TokenID {
		t.Fatal("rotated before it was due")
	}

	e.now = e.now.Add(2 * time.Hour) // due
	if err := e.reconcile("web"); err != nil {
		t.Fatal(err)
	}
	s := e.secret("web")
	second, err := auth.Parse(string(s.Data[injector.TokenSecretKey]))
	if err != nil || second.TokenID == first.TokenID {
		t.Fatalf("not rotated: %v", err)
	}
	// The old token still works for pods that started with it, and is on
	// record for revocation.
	if _, err := e.proc.Verifier.Verify(firstToken, time.Now()); err != nil {
		t.Errorf("rotation withdrew the old token that running pods still use: %v", err)
	}
	if !strings.Contains(s.Annotations[AnnotationPrevious], first.TokenID+"@") {
		t.Errorf("previous tokens %q do not record %s", s.Annotations[AnnotationPrevious], first.TokenID)
	}

	// Once the old token expires, the record is pruned.
	e.now = first.ExpiresAt.Add(time.Second)
	if err := e.reconcile("web"); err != nil {
		t.Fatal(err)
	}
	if p := e.secret("web").Annotations[AnnotationPrevious]; p != "" {
		t.Errorf("expired token still recorded: %q", p)
	}
}

func TestRevokeOnLeaving(t *testing.T) {
	tests := []struct {
		name   string
		change func(ns *corev1.Namespace)
		reason string
	}{
		{"opt-out label removed", func(ns *corev1.Namespace) { delete(ns.Labels, injector.LabelInject) }, "namespace opted out"},
		{"opt-in value changed", func(ns *corev1.Namespace) { ns.Labels[injector.LabelInject] = "disabled" }, "namespace opted out"},
		{"account label removed", func(ns *corev1.Namespace) { delete(ns.Labels, injector.KeyAccount) }, "namespace names no account"},
		{"account disabled", func(ns *corev1.Namespace) { ns.Labels[injector.KeyAccount] = "frozen" }, "account has AI features disabled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, optedIn("web", "acme", "shop"))
			if err := e.reconcile("web"); err != nil {
				t.Fatal(err)
			}
			first := e.token("web")
			e.now = e.now.Add(testCfg.TTL - testCfg.RotateBefore + time.Hour)
			if err := e.reconcile("web"); err != nil {
				t.Fatal(err)
			}
			second := e.token("web")

			ns, err := e.client.CoreV1().Namespaces().Get(e.ctx, "web", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			tt.change(ns)
			e.setNamespace(ns)
			if err := e.reconcile("web"); err != nil {
				t.Fatal(err)
			}
			// The Secret stays, marked, with its revoked token: injected
			// pods reference it, and a restart must not fail on it.
			sec := e.secret("web")
			if sec == nil {
				t.Fatal("the token Secret was deleted: restarting injected pods would fail on it")
			}
			if sec.Annotations[AnnotationWithdrawn] != tt.reason || sec.Annotations[AnnotationPrevious] != "" {
				t.Errorf("Secret annotations %v: want %s=%q and no previous tokens", sec.Annotations, AnnotationWithdrawn, tt.reason)
			}
			if _, err := e.proc.Verifier.Verify(string(sec.Data[injector.TokenSecretKey]), time.Now()); err == nil {
				t.Error("the withdrawn Secret's token still verifies")
			}
			revoked := e.proc.Revoked(t)
			for _, id := range []string{first.TokenID, second.TokenID} {
				if !slices.Contains(revoked, id) {
					t.Errorf("token %s not revoked (revoked: %q)", id, revoked)
				}
			}
			if !strings.Contains(e.logs.String(), tt.reason) {
				t.Errorf("logs do not give the reason %q:\n%s", tt.reason, e.logs.String())
			}
			// A resync changes nothing.
			if err := e.reconcile("web"); err != nil {
				t.Fatal(err)
			}
			if got := e.proc.Revoked(t); len(got) != len(revoked) {
				t.Errorf("a resync revoked again: %q, was %q", got, revoked)
			}
			// Back in: a new token replaces the withdrawn one.
			e.setNamespace(optedIn("web", "acme", "shop"))
			if err := e.reconcile("web"); err != nil {
				t.Fatal(err)
			}
			third := e.token("web")
			if third.TokenID == first.TokenID || third.TokenID == second.TokenID {
				t.Errorf("opted back in with a revoked token %s", third.TokenID)
			}
			if a := e.secret("web").Annotations; a[AnnotationWithdrawn] != "" || a[AnnotationPrevious] != "" {
				t.Errorf("the reissued Secret keeps %v", a)
			}
		})
	}
}

// TestDeletedNamespaceSecretGoes: a namespace going away takes its Secret
// with it; the controller revokes the tokens and deletes the Secret rather
// than mark it.
func TestDeletedNamespaceSecretGoes(t *testing.T) {
	e := newEnv(t, optedIn("gone", "acme", "shop"))
	if err := e.reconcile("gone"); err != nil {
		t.Fatal(err)
	}
	tok := e.token("gone")
	if err := e.client.CoreV1().Namespaces().Delete(e.ctx, "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, err := e.ctrl.namespaces.Get("gone"); err == nil; _, err = e.ctrl.namespaces.Get("gone") {
		if time.Now().After(deadline) {
			t.Fatal("informer never saw the namespace deleted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := e.reconcile("gone"); err != nil {
		t.Fatal(err)
	}
	if e.secret("gone") != nil {
		t.Error("the deleted namespace's Secret is still there")
	}
	if !slices.Contains(e.proc.Revoked(t), tok.TokenID) {
		t.Errorf("token %s not revoked", tok.TokenID)
	}
}

func TestAccountDisabledGetsNothing(t *testing.T) {
	e := newEnv(t, optedIn("cold", "frozen", "ice"))
	if err := e.reconcile("cold"); err != nil {
		t.Fatal(err)
	}
	if e.secret("cold") != nil {
		t.Error("a disabled account got a token")
	}
}

func TestProjectOfAnotherAccount(t *testing.T) {
	e := newEnv(t, optedIn("sneaky", "acme", "rival"))
	err := e.reconcile("sneaky")
	if err == nil || !strings.Contains(err.Error(), `belongs to account "globex"`) {
		t.Fatalf("got %v, want a refusal naming the project's account", err)
	}
	if e.secret("sneaky") != nil {
		t.Error("a Secret was written for another account's project")
	}
	if len(e.proc.Revoked(t)) != 1 {
		t.Errorf("the token minted by mistake was not revoked: %q", e.proc.Revoked(t))
	}
}

func TestNeverTouched(t *testing.T) {
	e := newEnv(t, optedIn("kube-system", "acme", "shop"), optedIn("tollgate-system", "acme", "shop"), optedIn("theirs", "acme", "shop"))
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secretName, Namespace: "theirs"}, Data: map[string][]byte{"token": []byte("x")}}
	if _, err := e.client.CoreV1().Secrets("theirs").Create(e.ctx, foreign, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"kube-system", "tollgate-system", "theirs"} {
		if err := e.reconcile(ns); err != nil {
			t.Fatal(err)
		}
	}
	if e.secret("kube-system") != nil || e.secret("tollgate-system") != nil {
		t.Error("a system namespace got a token")
	}
	if s := e.secret("theirs"); string(s.Data["token"]) != "x" || s.Labels[LabelManagedBy] != "" {
		t.Error("someone else's Secret was changed")
	}
}

// TestAdminAPIDown: with the account status unknown nothing changes, and the
// error makes the namespace retry.
func TestAdminAPIDown(t *testing.T) {
	e := newEnv(t, optedIn("web", "acme", "shop"))
	if err := e.reconcile("web"); err != nil {
		t.Fatal(err)
	}
	before := e.secret("web")
	e.proc.Close()
	e.now = e.now.Add(testCfg.TTL) // even a token due for rotation stays
	if err := e.reconcile("web"); err == nil {
		t.Fatal("no error with the admin API down")
	}
	if after := e.secret("web"); after.ResourceVersion != before.ResourceVersion {
		t.Error("the Secret changed while the admin API was down")
	}
}

// TestRun: the informer drives reconciliation end to end.
func TestRun(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- e.ctrl.Run(ctx, 2) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	if _, err := e.client.CoreV1().Namespaces().Create(e.ctx, optedIn("late", "acme", "shop"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.secret("late") == nil {
		if time.Now().After(deadline) {
			t.Fatal("no token Secret after the namespace opted in")
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.token("late")
}

func TestRefs(t *testing.T) {
	now := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	refs := []tokenRef{{"a", now.Add(time.Hour)}, {"b", now.Add(-time.Hour)}, {"c", now}}
	s := formatRefs(refs)
	if s != "a@2027-01-01T01:00:00Z,b@2026-12-31T23:00:00Z,c@2027-01-01T00:00:00Z" {
		t.Errorf("formatRefs = %q", s)
	}
	if got := parseRefs(s + ",garbage,@2027-01-01T00:00:00Z,d@notatime"); len(got) != 3 || got[0] != refs[0] {
		t.Errorf("parseRefs = %v", got)
	}
	if live := liveRefs(refs, now); len(live) != 1 || live[0].ID != "a" {
		t.Errorf("liveRefs = %v", live)
	}
}
