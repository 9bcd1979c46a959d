package certs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Keys of the self-signed mode's Secret.
const (
	KeyCAs    = "ca.crt"
	KeyCAKey  = "ca.key"
	KeyCert   = "tls.crt"
	KeyKey    = "tls.key"
	labelName = "app.kubernetes.io/managed-by"
)

// SelfSigned runs the self-signed mode. Its fields are set once before Run.
type SelfSigned struct {
	Client kubernetes.Interface
	// Namespace and SecretName locate the Secret holding CA and certificate.
	Namespace, SecretName string
	// WebhookConfig names the MutatingWebhookConfiguration whose caBundle
	// this keeps; every webhook in it gets the bundle.
	WebhookConfig string
	// Hosts the certificate covers: the Service's DNS names (and any IP a
	// URL-registered webhook is reached at).
	Hosts    []string
	Reloader *Reloader
	Log      *slog.Logger

	now   func() time.Time
	ready atomic.Bool
}

// Ready reports whether the last pass left a certificate in place and the
// webhook configuration trusting it: until then the API server could not
// call us, so the pod should not be Ready.
func (s *SelfSigned) Ready() bool { return s.ready.Load() }

// Run syncs now and then every interval until ctx ends. Failed passes are
// logged and retried at the next tick.
func (s *SelfSigned) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := s.Sync(ctx); err != nil {
			s.log().WarnContext(ctx, "certs: sync failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *SelfSigned) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// Sync makes one pass: the Secret up to date, its certificate served, the
// caBundle in place.
func (s *SelfSigned) Sync(ctx context.Context) error {
	if len(s.Hosts) == 0 {
		return errors.New("certs: no hosts to issue the serving certificate for")
	}
	now := time.Now()
	if s.now != nil {
		now = s.now()
	}
	secrets := s.Client.CoreV1().Secrets(s.Namespace)
	sec, err := secrets.Get(ctx, s.SecretName, metav1.GetOptions{})
	var cur *Bundle
	switch {
	case apierrors.IsNotFound(err):
		sec = nil
	case err != nil:
		return fmt.Errorf("certs: get Secret: %w", err)
	default:
		cur = &Bundle{CAs: sec.Data[KeyCAs], CAKey: sec.Data[KeyCAKey], Cert: sec.Data[KeyCert], Key: sec.Data[KeyKey]}
	}
	next, changed, err := renew(cur, s.Hosts, now)
	if err != nil {
		return err
	}
	if changed {
		// Optimistic concurrency: when another replica got there first, the
		// write fails and the next pass uses what it wrote.
		data := map[string][]byte{KeyCAs: next.CAs, KeyCAKey: next.CAKey, KeyCert: next.Cert, KeyKey: next.Key}
		if sec == nil {
			_, err = secrets.Create(ctx, &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: s.SecretName, Namespace: s.Namespace, Labels: map[string]string{labelName: "tollgate-injector"}},
				Type:       corev1.SecretTypeOpaque,
				Data:       data,
			}, metav1.CreateOptions{})
		} else {
			upd := sec.DeepCopy()
			upd.Data = data
			_, err = secrets.Update(ctx, upd, metav1.UpdateOptions{})
		}
		if err != nil {
			return fmt.Errorf("certs: write Secret: %w", err)
		}
		s.log().InfoContext(ctx, "certs: issued serving certificate", "not_after", next.serving.NotAfter, "hosts", s.Hosts)
	}
	if err := s.Reloader.Set(next.Cert, next.Key); err != nil {
		return err
	}
	ok, err := s.patchCABundle(ctx, next.CAs)
	s.ready.Store(ok && err == nil)
	return err
}

// patchCABundle puts bundle into every webhook of the configuration. It
// reports whether the configuration now trusts the bundle.
func (s *SelfSigned) patchCABundle(ctx context.Context, bundle []byte) (bool, error) {
	api := s.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	mwc, err := api.Get(ctx, s.WebhookConfig, metav1.GetOptions{})
	if err != nil {
		return false, fmt.Errorf("certs: webhook configuration %q: %w", s.WebhookConfig, err)
	}
	upd := mwc.DeepCopy()
	changed := false
	for i := range upd.Webhooks {
		if !bytes.Equal(upd.Webhooks[i].ClientConfig.CABundle, bundle) {
			upd.Webhooks[i].ClientConfig.CABundle = bundle
			changed = true
		}
	}
	if !changed {
		return true, nil
	}
	if _, err := api.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		return false, fmt.Errorf("certs: update the caBundle of %q: %w", s.WebhookConfig, err)
	}
	s.log().InfoContext(ctx, "certs: caBundle updated", "webhook_configuration", s.WebhookConfig)
	return true, nil
}
