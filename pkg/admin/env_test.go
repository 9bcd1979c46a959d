package admin_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/test/logbuf"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tollgate-dev/tollgate/pkg/admin"
	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/ledger"
)

const adminToken = "tgadm_test-admin-token-0123456789"

// env is one admin API served on loopback over a real SQLite ledger.
type env struct {
	store  *ledger.DB
	svc    *admin.Service
	signer *auth.Signer
	base   string // http://127.0.0.1:PORT
	conn   *grpc.ClientConn
	logs   *logbuf.Buffer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	store, err := ledger.OpenSQLite(ctx, filepath.Join(dir, "usage.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	signer, err := auth.GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.Default()
	if err != nil {
		t.Fatal(err)
	}
	// As in tollgate serve: revocations go to the ledger, and the
	// verifier reads the ledger's list and the data dir's file.
	revoked, err := store.WatchRevocations(ctx, ledger.RevocationWatchOptions{Every: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(revoked.Close)
	file, err := auth.NewFileRevocations(filepath.Join(dir, "revoked"), time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logbuf.Buffer{}
	svc := admin.New(admin.Config{
		Store:      store,
		Signer:     signer,
		Revoker:    store,
		Catalog:    cat,
		AdminToken: adminToken,
		Verifier: auth.NewVerifier(map[string]ed25519.PublicKey{signer.KeyID(): signer.PublicKey()},
			auth.AnyRevocations{revoked, file}),
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Serve(sctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	e := &env{store: store, svc: svc, signer: signer, base: "http://" + ln.Addr().String(), conn: conn, logs: logs}
	t.Cleanup(func() { e.checkLogsHoldNoTokens(t) })
	return e
}

// checkLogsHoldNoTokens fails if any token reached the service's log.
func (e *env) checkLogsHoldNoTokens(t *testing.T) {
	logs := e.logs.String()
	for _, secret := range []string{adminToken, auth.Prefix + "."} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log holds a token (%q):\n%s", secret, logs)
		}
	}
}

// grpcCall invokes method over the gRPC connection with token as bearer.
func (e *env) grpcCall(t *testing.T, token, method string, req, resp proto.Message) *status.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	return status.Convert(e.conn.Invoke(ctx, method, req, resp))
}

// httpResult is a JSON API answer.
type httpResult struct {
	status int
	header http.Header
	body   []byte
}

// errorBody is the JSON API's error shape.
type errorBody struct {
	Error struct {
		Code    int    `json:"code"`
		Status  string `json:"status"`
		Message string `json:"message"`
	} `json:"error"`
}

func (r httpResult) err(t *testing.T) errorBody {
	t.Helper()
	var eb errorBody
	if err := json.Unmarshal(r.body, &eb); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	return eb
}

// into decodes a 200 answer into m.
func (r httpResult) into(t *testing.T, m proto.Message) {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("HTTP %d: %s", r.status, r.body)
	}
	if err := protojson.Unmarshal(r.body, m); err != nil {
		t.Fatalf("response %s: %v", r.body, err)
	}
}

func (e *env) http(t *testing.T, token, method, path, body string) httpResult {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return httpResult{status: resp.StatusCode, header: resp.Header, body: b}
}

// gatewayToken mints a gateway token for account/project with the env's
// signing key (valid for an hour unless ttl says otherwise).
func (e *env) gatewayToken(t *testing.T, account, project string, ttl time.Duration) string {
	t.Helper()
	if ttl == 0 {
		ttl = time.Hour
	}
	tok, err := e.signer.Mint(auth.Claims{Account: account, Project: project, ExpiresAt: time.Now().Add(ttl)})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func wantCode(t *testing.T, what string, st *status.Status, want codes.Code) {
	t.Helper()
	if st.Code() != want {
		t.Errorf("%s: gRPC %v %q, want %v", what, st.Code(), st.Message(), want)
	}
}
