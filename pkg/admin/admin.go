// Package admin implements the admin and usage API of proto/tollgate/v1
// once, over the ledger and the token signer, and serves it over gRPC and
// as JSON over HTTP from the same methods.
//
// [Service] holds the operations and no access rules, so the CLI calls it
// in-process on a data dir. The transports ([Service.GRPCServer],
// [Service.Handler]) authenticate a bearer token and authorize each call:
// the admin token may do everything; a gateway token may read its own
// account's usage and nothing else.
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/ledger"
	pb "github.com/tollgate-dev/tollgate/proto/tollgate/v1"
)

// Store is the part of the ledger the API reads and changes.
type Store interface {
	CreateAccount(ctx context.Context, id string, plan catalog.Plan, credits int64) (ledger.Account, error)
	GetAccount(ctx context.Context, id string) (ledger.Account, error)
	ListAccounts(ctx context.Context) ([]ledger.Account, error)
	SetPlan(ctx context.Context, id string, plan catalog.Plan) error
	SetEnabled(ctx context.Context, id string, enabled bool) error
	SetTPMOverride(ctx context.Context, id, model string, tpm int64) error
	Credit(ctx context.Context, id string, amount int64, reason string) (balance int64, err error)

	CreateProject(ctx context.Context, id, account string, activated bool) (ledger.Project, error)
	GetProject(ctx context.Context, id string) (ledger.Project, error)
	ActivateProject(ctx context.Context, id string) error
	SetProjectLimits(ctx context.Context, id string, rpm, tpm int64) error
	ListProjects(ctx context.Context, account string) ([]ledger.Project, error)

	Summarize(ctx context.Context, q ledger.Query) ([]ledger.Bucket, error)
}

// Revoker withdraws gateway tokens by token id. expiresAt is when the
// token expires anyway, after which the revocation may be forgotten.
// *ledger.DB is the Revoker every gateway on the ledger reads.
type Revoker interface {
	RevokeToken(ctx context.Context, tokenID string, expiresAt time.Time) error
}

// Minter signs tokens: an *auth.Signer, or an *auth.KeySet whose keys
// rotate while the server runs.
type Minter interface {
	Mint(auth.Claims) (string, error)
}

// Config is what a Service works with.
type Config struct {
	Store Store
	// Signer mints tokens; without one MintToken is unavailable.
	Signer Minter
	// Revoker withdraws tokens; without one RevokeToken is unavailable.
	Revoker Revoker
	// Catalog, when set, refuses TPM overrides for models it does not
	// serve.
	Catalog *catalog.Catalog

	// AdminToken is the bearer token that may call every method over the
	// transports; empty lets no one in as admin.
	AdminToken string
	// Verifier checks gateway tokens presented to GetUsage; nil refuses
	// them.
	Verifier *auth.Verifier

	Logger *slog.Logger     // nil: slog.Default()
	Now    func() time.Time // nil: time.Now
}

// DefaultTokenTTL is the lifetime of a minted token when none is asked for.
const DefaultTokenTTL = 30 * 24 * time.Hour

// Service implements the AccountService, ProjectService, TokenService and
// UsageService servers. It is safe for concurrent use.
type Service struct {
	pb.UnimplementedAccountServiceServer
	pb.UnimplementedProjectServiceServer
	pb.UnimplementedTokenServiceServer
	pb.UnimplementedUsageServiceServer

	cfg   Config
	log   *slog.Logger
	now   func() time.Time
	admin *secret
}

// New returns a Service over cfg.Store.
func New(cfg Config) *Service {
	s := &Service{cfg: cfg, log: cfg.Logger, now: cfg.Now}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if cfg.AdminToken != "" {
		s.admin = newSecret(cfg.AdminToken)
	}
	return s
}

// storeError turns a ledger error into a status with a readable message:
// the ledger's own for what the caller got wrong, a generic one (and a log
// line) for what went wrong inside.
func (s *Service) storeError(op string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "ledger: ")
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		return status.Error(codes.NotFound, msg)
	case errors.Is(err, ledger.ErrExists):
		return status.Error(codes.AlreadyExists, msg)
	case errors.Is(err, ledger.ErrInvalid):
		return status.Error(codes.InvalidArgument, msg)
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, op+": canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, op+": deadline exceeded")
	}
	s.log.Error("admin: ledger", "op", op, "error", err)
	return status.Error(codes.Internal, op+": the ledger failed (see the server log)")
}

func invalid(format string, args ...any) error {
	return status.Error(codes.InvalidArgument, fmt.Sprintf(format, args...))
}
