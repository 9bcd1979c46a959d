// Package processortest runs the processor's real admin API (pkg/admin
// over a SQLite ledger) on loopback for the injector's tests.
package processortest

import (
	"context"
	"crypto/ed25519"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/admin"
	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/ledger"
)

// AdminToken is the test server's admin token.
const AdminToken = "tgadm_test-admin-token-not-a-real-one"

// Processor is a running admin API.
type Processor struct {
	Store    *ledger.DB
	URL      string
	Verifier *auth.Verifier
	revoked  string
	srv      *httptest.Server
}

// Start serves the admin API until the test ends.
func Start(t testing.TB) *Processor {
	t.Helper()
	dir := t.TempDir()
	store, err := ledger.OpenSQLite(context.Background(), filepath.Join(dir, "usage.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	signer, err := auth.GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	revoked := filepath.Join(dir, "revoked")
	svc := admin.New(admin.Config{
		Store:      store,
		Signer:     signer,
		Revoker:    admin.RevocationFile(revoked),
		AdminToken: AdminToken,
		Logger:     slog.New(slog.DiscardHandler),
	})
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(srv.Close)
	file, err := auth.NewFileRevocations(revoked, time.Nanosecond)
	if err != nil {
		t.Fatal(err)
	}
	v := auth.NewVerifier(map[string]ed25519.PublicKey{signer.KeyID(): signer.PublicKey()}, file)
	return &Processor{Store: store, URL: srv.URL, Verifier: v, revoked: revoked, srv: srv}
}

// Revoked returns the revoked token ids.
func (p *Processor) Revoked(t testing.TB) []string {
	t.Helper()
	b, err := os.ReadFile(p.revoked)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

// Close stops the server: the admin API becomes unreachable.
func (p *Processor) Close() { p.srv.Close() }
