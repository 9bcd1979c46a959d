package gateway_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// TestRefusedTokensLeakNothing: whatever is wrong with a credential, the
// refusal, the usage record and the debug log hold none of it (not the
// token, its payload or signature, nor a provider key the client sent)
// and none of the operator's keys, through each provider and each place
// a token is accepted.
func TestRefusedTokensLeakNothing(t *testing.T) {
	env := newBenchEnv(t)
	now := time.Now()
	signer, err := auth.GenerateKey("leak-test")
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := auth.GenerateKey("leak-test") // same kid, another key
	if err != nil {
		t.Fatal(err)
	}
	revoked := auth.NewRevocationSet("revoked-id")
	verifier := auth.NewVerifier(map[string]ed25519.PublicKey{signer.KeyID(): signer.PublicKey()}, revoked)
	mint := func(s *auth.Signer, c auth.Claims) string {
		t.Helper()
		c.Account, c.Project = "acct-leak", "proj-leak"
		tok, err := s.Mint(c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	good := mint(signer, auth.Claims{ExpiresAt: now.Add(time.Hour)})
	otherKid, err := auth.GenerateKey("unknown-kid")
	if err != nil {
		t.Fatal(err)
	}
	credentials := []struct{ name, cred string }{
		{"malformed", "tg1.bm90LWpzb24.AAAA"},
		{"forged signature", mint(stranger, auth.Claims{ExpiresAt: now.Add(time.Hour)})},
		{"unknown key", mint(otherKid, auth.Claims{ExpiresAt: now.Add(time.Hour)})},
		{"expired", mint(signer, auth.Claims{IssuedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Hour)})},
		{"revoked", mint(signer, auth.Claims{TokenID: "revoked-id", ExpiresAt: now.Add(time.Hour)})},
		{"not yet valid", mint(signer, auth.Claims{IssuedAt: now.Add(time.Hour), ExpiresAt: now.Add(2 * time.Hour)})},
		{"tampered payload", good[:10] + "X" + good[11:]},
		{"a provider key of the client's", "sk-proj-clientsownkey0123456789"},
	}
	places := []struct {
		name, target string
		header       func(cred string) gateway.Headers
	}{
		{"openai bearer", "/openai/v1/chat/completions", func(c string) gateway.Headers {
			return gateway.Headers{{Name: "Authorization", Value: "Bearer " + c}}
		}},
		{"anthropic x-api-key", "/anthropic/v1/messages", func(c string) gateway.Headers {
			return gateway.Headers{{Name: "x-api-key", Value: c}, {Name: "anthropic-version", Value: "2023-06-01"}}
		}},
		{"gemini x-goog-api-key", "/gemini/v1beta/models/gemini-2.5-flash:generateContent", func(c string) gateway.Headers {
			return gateway.Headers{{Name: "x-goog-api-key", Value: c}}
		}},
		{"gemini key parameter", "/gemini/v1beta/models/gemini-2.5-flash:generateContent?key=%s", func(string) gateway.Headers { return nil }},
	}
	var logs bytes.Buffer
	var rec usage.Record
	g := gateway.New(gateway.Config{
		Providers: env.providers(),
		Upstreams: env.upstreams(),
		Catalog:   env.catalog(t),
		Verifier:  verifier,
		Recorder:  gateway.RecorderFunc(func(r usage.Record) { rec = r }),
		Logger:    slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	for _, p := range places {
		for _, c := range credentials {
			t.Run(p.name+"/"+c.name, func(t *testing.T) {
				logs.Reset()
				rec = usage.Record{}
				target := p.target
				if strings.Contains(target, "%s") {
					target = fmt.Sprintf(target, c.cred)
				}
				x := g.NewExchange(context.Background(), "req-leak")
				out := x.RequestHeaders(http.MethodPost, target, p.header(c.cred))
				if out.Action != gateway.Respond {
					t.Fatalf("action %v: the credential was accepted", out.Action)
				}
				x.Settle(gateway.Completed)
				var seen strings.Builder
				seen.Write(out.Response.Body)
				for _, h := range out.Response.Header {
					fmt.Fprintf(&seen, "\n%s: %s", h.Name, h.Value)
				}
				fmt.Fprintf(&seen, "\n%+v\n", rec)
				seen.Write(logs.Bytes())
				for _, s := range []string{"sk-real", "sk-ant-real", "AIza-real"} {
					if strings.Contains(seen.String(), s) {
						t.Errorf("the operator's key %q shows in what the refusal left:\n%s", s, seen.String())
					}
				}
				// Any 12 bytes in a row of the credential are a leak: a
				// part of a token, or a prefix of a key, is telling too.
				const window = 12
				for i := 0; i+window <= len(c.cred); i++ {
					if part := c.cred[i : i+window]; strings.Contains(seen.String(), part) {
						t.Fatalf("%q, of the credential, shows in what the refusal left:\n%s", part, seen.String())
					}
				}
				if rec.Status != usage.StatusRejected {
					t.Errorf("record status %q, want rejected", rec.Status)
				}
			})
		}
	}
}
