package kube

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// Webhook is an HTTPS server on loopback for admission webhooks, with a
// throwaway CA the API server is told to trust.
type Webhook struct {
	// URL is the server's base URL (https://127.0.0.1:PORT).
	URL string
	// CA is the PEM CA certificate for a webhook's caBundle.
	CA []byte
}

// ServeWebhook serves h over HTTPS on loopback until the test ends.
func ServeWebhook(t testing.TB, h http.Handler) *Webhook {
	t.Helper()
	caPEM, cert, err := loopbackCert()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &Webhook{URL: srv.URL, CA: caPEM}
}

// loopbackCert makes a CA and a serving certificate for 127.0.0.1 signed
// by it.
func loopbackCert() (caPEM []byte, cert tls.Certificate, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, cert, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tollgate test webhook CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, cert, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, cert, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, cert, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, cert, err
	}
	cert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), cert, nil
}

// PointAt rewrites every webhook of mwc to call w by URL instead of its
// in-cluster Service (which needs cluster DNS and routable endpoints, and
// there are none here), keeping the Service's path, and trusts w's CA.
func (w *Webhook) PointAt(mwc *admissionregistrationv1.MutatingWebhookConfiguration) {
	for i := range mwc.Webhooks {
		cc := &mwc.Webhooks[i].ClientConfig
		path := ""
		if cc.Service != nil && cc.Service.Path != nil {
			path = *cc.Service.Path
		}
		u := w.URL + path
		cc.URL, cc.Service, cc.CABundle = &u, nil, w.CA
	}
}

// InstallWebhook creates mwc and waits until the API server calls it: it
// takes effect asynchronously, so a server-side dry-run of canary in
// canary's namespace is retried until mutated reports true.
func (e *Env) InstallWebhook(ctx context.Context, mwc *admissionregistrationv1.MutatingWebhookConfiguration, canary *corev1.Pod, mutated func(*corev1.Pod) bool) error {
	api := e.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	if _, err := api.Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create %s: %w", mwc.Name, err)
	}
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		got, err := e.Client.CoreV1().Pods(canary.Namespace).Create(ctx, canary.DeepCopy(), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			// The webhook may refuse (failurePolicy Fail) before its
			// handler is reachable; keep trying until the deadline.
			if apierrors.IsInternalError(err) || apierrors.IsForbidden(err) || apierrors.IsBadRequest(err) {
				last = err
				return false, nil
			}
			return false, err
		}
		return mutated(got), nil
	})
	if err != nil {
		return fmt.Errorf("webhook %s never took effect: %w (last error: %v)", mwc.Name, err, last)
	}
	return nil
}
