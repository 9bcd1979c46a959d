// Package controller keeps one gateway-token Secret in every opted-in
// namespace: it mints a token for the namespace's project when the
// namespace opts in, rotates it well before it expires, and revokes every
// token it issued there when the namespace opts out, is deleted, or its
// account has AI features disabled (keeping the Secret, marked withdrawn,
// while the namespace stays: injected pods reference it).
//
// Pods read the token once, at start (an env var from the Secret), so a
// rotated-out token stays valid until it expires: the controller records
// it on the Secret and revokes it only when the namespace leaves. Every pod
// therefore starts with a token valid for at least RotateBefore.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/tollgate-dev/tollgate/injector"
	"github.com/tollgate-dev/tollgate/injector/adminapi"
	"github.com/tollgate-dev/tollgate/pkg/auth"
)

// Labels and annotations on the token Secret.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "tollgate-injector"

	AnnotationTokenID = "tollgate.dev/token-id"
	AnnotationExpires = "tollgate.dev/expires"
	// AnnotationPrevious lists rotated-out tokens still valid, as
	// "id@RFC3339-expiry" separated by commas: they are revoked when the
	// namespace leaves.
	AnnotationPrevious = "tollgate.dev/previous-tokens"
	// AnnotationWithdrawn marks a Secret whose tokens were all revoked when
	// the namespace stopped wanting one, and says why. The Secret stays:
	// injected pods reference it, and a container restart in them would
	// fail without it (CreateContainerConfigError), taking the whole app
	// down instead of only its AI calls, which the gateway now refuses.
	AnnotationWithdrawn = "tollgate.dev/withdrawn"
)

// Tokens mints and revokes gateway tokens (the processor's admin API).
type Tokens interface {
	MintToken(ctx context.Context, project string, ttl time.Duration) (adminapi.Token, error)
	RevokeToken(ctx context.Context, tokenID string) error
}

// Accounts says whether an account has AI features enabled.
type Accounts interface {
	AccountEnabled(ctx context.Context, account string) (bool, error)
}

// Config tunes the controller.
type Config struct {
	// SecretName is the token Secret's name in each namespace.
	SecretName string
	// OwnNamespace is the injector's; it never gets a token.
	OwnNamespace string
	// TTL is a token's lifetime; RotateBefore how long before expiry a new
	// one replaces it (and so the least validity a starting pod gets).
	TTL, RotateBefore time.Duration
}

// Validate reports whether c is usable.
func (c Config) Validate() error {
	switch {
	case c.SecretName == "":
		return errors.New("controller: the Secret name is required")
	case c.RotateBefore <= 0 || c.TTL <= c.RotateBefore:
		return fmt.Errorf("controller: token TTL %v and rotate-before %v: want 0 < rotate-before < TTL", c.TTL, c.RotateBefore)
	}
	return nil
}

// Controller reconciles namespaces into token Secrets.
type Controller struct {
	cfg        Config
	client     kubernetes.Interface
	namespaces corelisters.NamespaceLister
	synced     cache.InformerSynced
	queue      workqueue.TypedRateLimitingInterface[string]
	tokens     Tokens
	accounts   Accounts
	log        *slog.Logger
	now        func() time.Time
}

// New returns a controller over the namespace informer of factory (whose
// resync period is how often every namespace is re-checked: account
// status and rotation are noticed then). Start factory after New.
func New(cfg Config, client kubernetes.Interface, factory informers.SharedInformerFactory, tokens Tokens, accounts Accounts, log *slog.Logger) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	inf := factory.Core().V1().Namespaces()
	c := &Controller{
		cfg: cfg, client: client, namespaces: inf.Lister(), synced: inf.Informer().HasSynced,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "tollgate-tokens"}),
		tokens: tokens, accounts: accounts, log: log, now: time.Now,
	}
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			c.queue.Add(key)
		}
	}
	_, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	})
	if err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	return c, nil
}

// Run processes namespaces until ctx ends.
func (c *Controller) Run(ctx context.Context, workers int) error {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced) {
		return errors.New("controller: namespace cache did not sync")
	}
	for range workers {
		go func() {
			for c.next(ctx) {
			}
		}()
	}
	<-ctx.Done()
	return nil
}

func (c *Controller) next(ctx context.Context) bool {
	name, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(name)
	if err := c.Reconcile(ctx, name); err != nil {
		c.log.WarnContext(ctx, "controller: reconcile failed, retrying", "namespace", name, "err", err)
		c.queue.AddRateLimited(name)
		return true
	}
	c.queue.Forget(name)
	return true
}

// Reconcile brings one namespace's token Secret to what the namespace asks.
func (c *Controller) Reconcile(ctx context.Context, name string) error {
	ns, err := c.namespaces.Get(name)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if apierrors.IsNotFound(err) {
		ns = nil // deleted: its Secret is gone or going; nothing to write
	}
	want, reason, err := c.wanted(ctx, ns)
	if err != nil {
		return err // account status unknown: change nothing
	}
	secrets := c.client.CoreV1().Secrets(name)
	sec, err := secrets.Get(ctx, c.cfg.SecretName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		sec = nil
	case err != nil:
		return fmt.Errorf("get Secret: %w", err)
	case sec.Labels[LabelManagedBy] != ManagedBy:
		// Someone else's Secret of that name: never ours to change. Pods get
		// whatever it holds; say so once per resync.
		c.log.ErrorContext(ctx, "controller: a Secret with the token Secret's name exists and is not managed by tollgate; leaving it alone", "namespace", name, "secret", c.cfg.SecretName)
		return nil
	}
	if !want {
		if sec == nil || sec.Annotations[AnnotationWithdrawn] != "" && ns != nil && ns.DeletionTimestamp == nil {
			return nil // nothing issued, or withdrawn already
		}
		return c.withdraw(ctx, ns, sec, reason)
	}
	return c.ensure(ctx, ns, sec)
}

// wanted reports whether ns should hold a token, and why not.
func (c *Controller) wanted(ctx context.Context, ns *corev1.Namespace) (bool, string, error) {
	if ns == nil {
		return false, "namespace deleted", nil
	}
	view := injector.NamespaceOf(ns)
	switch {
	case ns.DeletionTimestamp != nil:
		return false, "namespace terminating", nil
	case view.System() || ns.Name == c.cfg.OwnNamespace:
		return false, "system namespace", nil
	case !view.OptedIn():
		return false, "namespace opted out", nil
	case view.Account() == "":
		return false, "namespace names no account", nil
	}
	enabled, err := c.accounts.AccountEnabled(ctx, view.Account())
	if err != nil {
		return false, "", fmt.Errorf("account status: %w", err)
	}
	if !enabled {
		return false, "account has AI features disabled", nil
	}
	return true, "", nil
}

// ensure makes sec hold a valid token for ns's project, minting when there
// is none, it is due for rotation, or it names another account or project.
func (c *Controller) ensure(ctx context.Context, ns *corev1.Namespace, sec *corev1.Secret) error {
	view := injector.NamespaceOf(ns)
	account, project := view.Account(), view.Project()
	now := c.now()

	var previous []tokenRef
	if sec != nil && sec.Annotations[AnnotationWithdrawn] != "" {
		// Withdrawn earlier: its token is revoked, and so are all it
		// recorded. The namespace is back: issue a new one.
		sec.Annotations[AnnotationPrevious] = ""
		sec.Data = nil
	}
	if sec != nil {
		previous = parseRefs(sec.Annotations[AnnotationPrevious])
		cur, err := auth.Parse(string(sec.Data[injector.TokenSecretKey]))
		switch {
		case err != nil:
			// Unreadable: replace it. Nothing to revoke by id.
		case cur.Account != account || cur.Project != project:
			// Scoped to the wrong project now: withdraw it at once.
			if err := c.tokens.RevokeToken(ctx, cur.TokenID); err != nil {
				return err
			}
		case cur.ExpiresAt.Sub(now) > c.cfg.RotateBefore:
			return c.prune(ctx, sec, previous, now) // valid and not due
		default:
			previous = append(previous, tokenRef{ID: cur.TokenID, Expires: cur.ExpiresAt})
		}
	}

	tok, err := c.tokens.MintToken(ctx, project, c.cfg.TTL)
	if err != nil {
		return err
	}
	if tok.Account != account {
		// The project belongs to another account: a namespace label must
		// not bill someone else.
		revokeErr := c.tokens.RevokeToken(ctx, tok.ID)
		return errors.Join(fmt.Errorf("project %q belongs to account %q, not %q as the namespace says", project, tok.Account, account), revokeErr)
	}
	next := c.secret(ns.Name, tok, liveRefs(previous, now))
	if sec == nil {
		_, err = c.client.CoreV1().Secrets(ns.Name).Create(ctx, next, metav1.CreateOptions{})
	} else {
		next.ResourceVersion = sec.ResourceVersion
		_, err = c.client.CoreV1().Secrets(ns.Name).Update(ctx, next, metav1.UpdateOptions{})
	}
	if err != nil {
		// The new token is in no Secret: withdraw it rather than leave it
		// valid and unrecorded.
		return errors.Join(fmt.Errorf("write Secret: %w", err), c.tokens.RevokeToken(ctx, tok.ID))
	}
	c.log.InfoContext(ctx, "controller: issued gateway token", "namespace", ns.Name, "account", account, "project", project,
		"token_id", tok.ID, "expires", tok.Expires.UTC().Format(time.RFC3339), "rotated", sec != nil)
	return nil
}

// prune drops expired tokens from the Secret's record.
func (c *Controller) prune(ctx context.Context, sec *corev1.Secret, previous []tokenRef, now time.Time) error {
	live := liveRefs(previous, now)
	if len(live) == len(previous) {
		return nil
	}
	next := sec.DeepCopy()
	setOrDelete(next.Annotations, AnnotationPrevious, formatRefs(live))
	_, err := c.client.CoreV1().Secrets(sec.Namespace).Update(ctx, next, metav1.UpdateOptions{})
	return err
}

// withdraw revokes every token the Secret records. A failed revocation
// keeps the Secret, the record, for the retry. The Secret of a namespace
// that is going away is deleted; otherwise it stays, holding its revoked
// token and marked withdrawn (see AnnotationWithdrawn), so that injected
// pods still start and get the gateway's refusal on their AI calls.
func (c *Controller) withdraw(ctx context.Context, ns *corev1.Namespace, sec *corev1.Secret, reason string) error {
	ids := []string{}
	if cur, err := auth.Parse(string(sec.Data[injector.TokenSecretKey])); err == nil {
		ids = append(ids, cur.TokenID)
	}
	for _, r := range liveRefs(parseRefs(sec.Annotations[AnnotationPrevious]), c.now()) {
		ids = append(ids, r.ID)
	}
	for _, id := range ids {
		if err := c.tokens.RevokeToken(ctx, id); err != nil {
			return err
		}
	}
	if ns == nil || ns.DeletionTimestamp != nil {
		err := c.client.CoreV1().Secrets(sec.Namespace).Delete(ctx, sec.Name, metav1.DeleteOptions{
			Preconditions: &metav1.Preconditions{UID: &sec.UID},
		})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete Secret: %w", err)
		}
	} else {
		next := sec.DeepCopy()
		if next.Annotations == nil {
			next.Annotations = map[string]string{}
		}
		next.Annotations[AnnotationWithdrawn] = reason
		delete(next.Annotations, AnnotationPrevious)
		if _, err := c.client.CoreV1().Secrets(sec.Namespace).Update(ctx, next, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("mark Secret withdrawn: %w", err)
		}
	}
	c.log.InfoContext(ctx, "controller: revoked gateway tokens", "namespace", sec.Namespace, "reason", reason, "token_ids", ids)
	return nil
}

// secret is the token Secret for tok.
func (c *Controller) secret(namespace string, tok adminapi.Token, previous []tokenRef) *corev1.Secret {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: c.cfg.SecretName, Namespace: namespace,
			Labels: map[string]string{LabelManagedBy: ManagedBy},
			Annotations: map[string]string{
				injector.KeyAccount: tok.Account,
				injector.KeyProject: tok.Project,
				AnnotationTokenID:   tok.ID,
				AnnotationExpires:   tok.Expires.UTC().Format(time.RFC3339),
			},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{injector.TokenSecretKey: []byte(tok.Token)},
	}
	setOrDelete(s.Annotations, AnnotationPrevious, formatRefs(previous))
	return s
}

func setOrDelete(m map[string]string, key, value string) {
	if value == "" {
		delete(m, key)
		return
	}
	m[key] = value
}

// tokenRef is a token the controller issued, by id.
type tokenRef struct {
	ID      string
	Expires time.Time
}

func parseRefs(s string) []tokenRef {
	var out []tokenRef
	for _, f := range strings.Split(s, ",") {
		id, exp, ok := strings.Cut(strings.TrimSpace(f), "@")
		t, err := time.Parse(time.RFC3339, exp)
		if ok && id != "" && err == nil {
			out = append(out, tokenRef{ID: id, Expires: t})
		}
	}
	return out
}

func formatRefs(refs []tokenRef) string {
	parts := make([]string, len(refs))
	for i, r := range refs {
		parts[i] = r.ID + "@" + r.Expires.UTC().Format(time.RFC3339)
	}
	return strings.Join(parts, ",")
}

// liveRefs drops the expired ones: an expired token needs no revocation.
func liveRefs(refs []tokenRef, now time.Time) []tokenRef {
	return slices.DeleteFunc(slices.Clone(refs), func(r tokenRef) bool { return !r.Expires.After(now) })
}
