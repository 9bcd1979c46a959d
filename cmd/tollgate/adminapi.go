package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/tollgate-dev/tollgate/pkg/admin"
	"github.com/tollgate-dev/tollgate/pkg/auth"
)

// adminTokenEnv, when set, is the admin API's bearer token; otherwise it is
// read from adminTokenFile in the data dir, which is created on first use
// (in Kubernetes, mount a Secret there or set the variable).
const (
	adminTokenEnv  = "TOLLGATE_ADMIN_TOKEN"
	adminTokenFile = "admin.token"
)

const adminListenUsage = "serve the admin API (gRPC and JSON over HTTP) on this address, e.g. 127.0.0.1:8788; off when empty"

// startAdmin serves the admin API for st on addr until the returned stop is
// called; with an empty addr it does nothing.
func startAdmin(ctx context.Context, addr string, st *stack, dataDir string, log *slog.Logger) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	token, where := strings.TrimSpace(os.Getenv(adminTokenEnv)), "$"+adminTokenEnv
	if token == "" {
		where = filepath.Join(dataDir, adminTokenFile)
		if token, err = admin.LoadOrCreateAdminToken(where); err != nil {
			return nil, err
		}
	} else if err := admin.CheckAdminToken(token); err != nil {
		// Refused at start: a guessable token on a listener others can
		// reach would hand out credits and tokens.
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	// Revocations go to the ledger, which every replica polls: one made
	// here is honoured by all of them.
	svc := admin.New(admin.Config{
		Store:      st.store,
		Signer:     st.keys,
		Revoker:    st.store,
		Catalog:    st.catalog,
		AdminToken: token,
		Verifier:   auth.NewKeySetVerifier(st.keys, st.revoked),
		Logger:     log,
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin listen %s: %w", addr, err)
	}
	log.Info("admin API", "addr", ln.Addr().String(), "token_from", where)
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := svc.Serve(sctx, ln); err != nil {
			log.Error("admin API", "error", err)
		}
	}()
	return func() { cancel(); <-done }, nil
}
