package adminapi

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/injector/internal/processortest"
	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/catalog"
)

func TestClient(t *testing.T) {
	p := processortest.Start(t)
	ctx := context.Background()
	if _, err := p.Store.CreateAccount(ctx, "acme", catalog.PlanPro, 1000); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Store.CreateProject(ctx, "shop", "acme", true); err != nil {
		t.Fatal(err)
	}
	c, err := New(p.URL+"/", processortest.AdminToken, nil)
	if err != nil {
		t.Fatal(err)
	}

	if on, err := c.AccountEnabled(ctx, "acme"); err != nil || !on {
		t.Fatalf("AccountEnabled(acme) = %v, %v; want true", on, err)
	}
	if err := p.Store.SetEnabled(ctx, "acme", false); err != nil {
		t.Fatal(err)
	}
	if on, err := c.AccountEnabled(ctx, "acme"); err != nil || on {
		t.Fatalf("AccountEnabled(disabled acme) = %v, %v; want false", on, err)
	}
	if _, err := c.AccountEnabled(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown account: %v, want ErrNotFound", err)
	}

	tok, err := c.MintToken(ctx, "shop", 90*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := auth.Parse(tok.Token)
	if err != nil {
		t.Fatal(err)
	}
	if claims.Account != "acme" || claims.Project != "shop" || claims.TokenID != tok.ID || tok.Account != "acme" ||
		!claims.ExpiresAt.Equal(tok.Expires) || claims.ExpiresAt.Sub(claims.IssuedAt) != 90*24*time.Hour {
		t.Errorf("minted %+v with claims %+v", tok, claims)
	}
	if _, err := c.MintToken(ctx, "no-such-project", time.Hour); !errors.Is(err, ErrNotFound) {
		t.Errorf("mint for an unknown project: %v, want ErrNotFound", err)
	}

	if err := c.RevokeToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if list := p.Revoked(t); !slices.Contains(list, tok.ID) {
		t.Errorf("revocation list %q lacks %s", list, tok.ID)
	}
	if _, err := p.Verifier.Verify(tok.Token, time.Now()); !errors.Is(err, auth.ErrRevoked) {
		t.Errorf("the processor still accepts the revoked token: %v", err)
	}

	bad, err := New(p.URL, "tgadm_wrong", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = bad.AccountEnabled(ctx, "acme")
	if err == nil || !strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), "tgadm_") {
		t.Errorf("wrong admin token: %v, want a 401 that does not quote the token", err)
	}
}

func TestNewRefuses(t *testing.T) {
	for _, tc := range []struct{ url, token string }{
		{"", "t"}, {"ftp://x", "t"}, {"http://", "t"}, {"http://x", ""},
	} {
		if _, err := New(tc.url, tc.token, nil); err == nil {
			t.Errorf("New(%q, %q) accepted", tc.url, tc.token)
		}
	}
}

type countingSource struct {
	calls   atomic.Int32
	enabled atomic.Bool
	fail    atomic.Bool
}

func (s *countingSource) AccountEnabled(context.Context, string) (bool, error) {
	s.calls.Add(1)
	if s.fail.Load() {
		return false, errors.New("admin API unreachable")
	}
	return s.enabled.Load(), nil
}

func TestAccountCache(t *testing.T) {
	src := &countingSource{}
	src.enabled.Store(true)
	c := NewAccountCache(src, time.Minute)
	now := time.Unix(1_800_000_000, 0)
	c.now = func() time.Time { return now }
	ctx := context.Background()

	steps := []struct {
		name      string
		advance   time.Duration
		enabled   bool // the source's answer
		fail      bool
		want      bool
		wantErr   bool
		wantCalls int32
	}{
		{"first ask goes to the source", 0, true, false, true, false, 1},
		{"within the TTL from the cache", 30 * time.Second, false, false, true, false, 1},
		{"after the TTL asks again", 31 * time.Second, false, false, false, false, 2},
		{"source down: the last answer", 2 * time.Minute, true, true, false, false, 3},
		{"source back: fresh answer", time.Second, true, false, true, false, 4},
	}
	for _, s := range steps {
		now = now.Add(s.advance)
		src.enabled.Store(s.enabled)
		src.fail.Store(s.fail)
		got, err := c.AccountEnabled(ctx, "acme")
		if got != s.want || (err != nil) != s.wantErr || src.calls.Load() != s.wantCalls {
			t.Errorf("%s: got %v, %v after %d calls; want %v, err %v, %d calls", s.name, got, err, src.calls.Load(), s.want, s.wantErr, s.wantCalls)
		}
	}
	src.fail.Store(true)
	if _, err := c.AccountEnabled(ctx, "never-seen"); err == nil {
		t.Error("no answer ever and the source down: want the error")
	}
}
