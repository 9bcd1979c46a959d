package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

const mwcName = "tollgate-injector"

var hosts = []string{"tollgate-injector.tollgate-system.svc", "tollgate-injector.tollgate-system.svc.cluster.local", "127.0.0.1"}

func newMWC() *admissionregistrationv1.MutatingWebhookConfiguration {
	url := "https://127.0.0.1:1/inject"
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: mwcName},
		Webhooks: []admissionregistrationv1.MutatingWebhook{
			{Name: "pods.tollgate.dev", ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url}},
		},
	}
}

func newSelfSigned(client *fake.Clientset, now *time.Time) *SelfSigned {
	return &SelfSigned{
		Client: client, Namespace: "tollgate-system", SecretName: "tollgate-injector-tls",
		WebhookConfig: mwcName, Hosts: hosts, Reloader: &Reloader{},
		now: func() time.Time { return *now },
	}
}

// serve runs an HTTPS server on loopback with r's certificates.
func serve(t *testing.T, r *Reloader) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", r.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:  http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }),
		ErrorLog: log.New(io.Discard, "", 0), // refused handshakes are what some cases test
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// handshake connects as the API server would, trusting only the bundle in
// the webhook configuration, and returns the served certificate.
func handshake(t *testing.T, client *fake.Clientset, addr, serverName string, now time.Time) (*x509.Certificate, error) {
	t.Helper()
	mwc, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), mwcName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(mwc.Webhooks[0].ClientConfig.CABundle) {
		t.Fatal("caBundle holds no certificate")
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: pool, ServerName: serverName, Time: func() time.Time { return now }})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

func TestSelfSigned(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(newMWC())
	now := time.Now()
	s := newSelfSigned(client, &now)
	if s.Ready() {
		t.Fatal("ready before the first sync")
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !s.Ready() {
		t.Fatal("not ready after a sync")
	}
	addr := serve(t, s.Reloader)
	first, err := handshake(t, client, addr, "tollgate-injector.tollgate-system.svc", now)
	if err != nil {
		t.Fatalf("the API server's view cannot verify the webhook: %v", err)
	}
	if _, err := handshake(t, client, addr, "127.0.0.1", now); err != nil {
		t.Errorf("IP host not covered: %v", err)
	}
	if _, err := handshake(t, client, addr, "evil.example", now); err == nil {
		t.Error("a name the certificate was not issued for verified")
	}

	// A second replica reads the same Secret and serves the same certificate.
	other := newSelfSigned(client, &now)
	if err := other.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if c, err := other.Reloader.GetCertificate(nil); err != nil || !c.Leaf.Equal(first) {
		t.Error("the second replica minted its own certificate")
	}

	// A pass with nothing due changes nothing.
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if c, _ := handshake(t, client, addr, hosts[0], now); !c.Equal(first) {
		t.Error("certificate replaced with nothing due")
	}

	// Serving certificate due: renewed, and the running server hands out
	// the new one on the next handshake, trusted by the same bundle.
	now = first.NotAfter.Add(-RenewBefore + time.Hour)
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	second, err := handshake(t, client, addr, hosts[0], now)
	if err != nil {
		t.Fatalf("after renewal: %v", err)
	}
	if second.Equal(first) || second.NotAfter.Before(now.Add(ServingLifetime-2*time.Hour)) {
		t.Errorf("not renewed: %v → %v", first.NotAfter, second.NotAfter)
	}

	// CA due: a new CA signs, and the bundle trusts old and new, so a
	// replica still serving the old certificate keeps working.
	oldBundle := bundleOf(t, client)
	now = now.Add(CALifetime - caRenewBefore)
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	newBundle := bundleOf(t, client)
	if len(newBundle) != 2 || !newBundle[1].Equal(oldBundle[0]) {
		t.Fatalf("bundle after CA renewal has %d CAs, want the new then the old", len(newBundle))
	}
	third, err := handshake(t, client, addr, hosts[0], now)
	if err != nil {
		t.Fatal(err)
	}
	if third.CheckSignatureFrom(newBundle[0]) != nil {
		t.Error("the serving certificate is not signed by the new CA")
	}
}

func bundleOf(t *testing.T, client *fake.Clientset) []*x509.Certificate {
	t.Helper()
	mwc, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), mwcName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	certs, err := parseCerts(mwc.Webhooks[0].ClientConfig.CABundle)
	if err != nil {
		t.Fatal(err)
	}
	return certs
}

// TestSelfSignedRepatches: a caBundle wiped (helm upgrade rendering the
// configuration afresh) is put back on the next pass, and readiness
// follows.
func TestSelfSignedRepatches(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	now := time.Now()
	s := newSelfSigned(client, &now)
	if err := s.Sync(ctx); err == nil || s.Ready() {
		t.Fatalf("no webhook configuration: err %v ready %v, want an error and not ready", err, s.Ready())
	}
	if !s.Reloader.Loaded() {
		t.Error("the certificate should be served even before the configuration exists")
	}
	api := client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	if _, err := api.Create(ctx, newMWC(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx); err != nil || !s.Ready() {
		t.Fatalf("err %v ready %v", err, s.Ready())
	}
	if _, err := api.Update(ctx, newMWC(), metav1.UpdateOptions{}); err != nil { // caBundle gone
		t.Fatal(err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if len(bundleOf(t, client)) != 1 {
		t.Error("caBundle not restored")
	}
}

func TestWatchFiles(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	write := func(b Bundle) {
		if err := os.WriteFile(certFile, b.Cert, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, b.Key, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	b1, _, err := renew(nil, hosts, now)
	if err != nil {
		t.Fatal(err)
	}
	write(b1)
	r := &Reloader{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, 10)
	done := make(chan error, 1)
	go func() {
		done <- WatchFiles(ctx, r, certFile, keyFile, 5*time.Millisecond, func(err error) { errs <- err })
	}()
	waitFor(t, func() bool { return r.Loaded() })
	addr := serve(t, r)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b1.CAs)
	served := func() *x509.Certificate {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: hosts[0]})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0]
	}
	if !served().Equal(b1.serving) {
		t.Fatal("not serving the mounted certificate")
	}

	// A half-written renewal (a key that does not match) keeps the old pair.
	b2, _, err := renew(&Bundle{CAs: b1.CAs, CAKey: b1.CAKey, Cert: b1.Cert, Key: b1.Key}, append(hosts, "new.example"), now)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, b2.Cert, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err == nil {
		t.Fatal("mismatched pair not reported")
	}
	if !served().Equal(b1.serving) {
		t.Error("a broken pair replaced the working one")
	}
	if err := os.WriteFile(keyFile, b2.Key, 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return served().Equal(b2.serving) })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestWatchFilesMissing(t *testing.T) {
	err := WatchFiles(context.Background(), &Reloader{}, "/nonexistent/tls.crt", "/nonexistent/tls.key", time.Second, nil)
	if err == nil {
		t.Fatal("missing files accepted")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
