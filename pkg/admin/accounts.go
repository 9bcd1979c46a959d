package admin

import (
	"context"
	"maps"

	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/internal/errtext"
	"github.com/tollgate-dev/tollgate/pkg/ledger"
	pb "github.com/tollgate-dev/tollgate/proto/tollgate/v1"
)

func accountProto(a ledger.Account) *pb.Account {
	return &pb.Account{
		Id:           a.ID,
		Plan:         string(a.Plan),
		Enabled:      a.Enabled,
		Balance:      credits(a.Balance),
		TpmOverrides: maps.Clone(a.TPMOverrides),
	}
}

// CreateAccount implements pb.AccountServiceServer.
func (s *Service) CreateAccount(ctx context.Context, req *pb.CreateAccountRequest) (*pb.CreateAccountResponse, error) {
	var opening int64
	if req.GetCredits() != "" {
		var err error
		if opening, err = ParseCredits(req.GetCredits()); err != nil {
			return nil, invalid("%v", err)
		}
		if opening < 0 {
			return nil, invalid("opening balance %s: want zero or more credits (an account's credit command can take credits away later)", req.GetCredits())
		}
	}
	a, err := s.cfg.Store.CreateAccount(ctx, req.GetId(), catalog.Plan(req.GetPlan()), opening)
	if err != nil {
		return nil, s.storeError("create account", err)
	}
	return &pb.CreateAccountResponse{Account: accountProto(a)}, nil
}

// GetAccount implements pb.AccountServiceServer.
func (s *Service) GetAccount(ctx context.Context, req *pb.GetAccountRequest) (*pb.GetAccountResponse, error) {
	a, err := s.account(ctx, "get account", req.GetId())
	if err != nil {
		return nil, err
	}
	return &pb.GetAccountResponse{Account: a}, nil
}

func (s *Service) account(ctx context.Context, op, id string) (*pb.Account, error) {
	a, err := s.cfg.Store.GetAccount(ctx, id)
	if err != nil {
		return nil, s.storeError(op, err)
	}
	return accountProto(a), nil
}

// ListAccounts implements pb.AccountServiceServer.
func (s *Service) ListAccounts(ctx context.Context, _ *pb.ListAccountsRequest) (*pb.ListAccountsResponse, error) {
	as, err := s.cfg.Store.ListAccounts(ctx)
	if err != nil {
		return nil, s.storeError("list accounts", err)
	}
	out := &pb.ListAccountsResponse{Accounts: make([]*pb.Account, 0, len(as))}
	for _, a := range as {
		out.Accounts = append(out.Accounts, accountProto(a))
	}
	return out, nil
}

// SetPlan implements pb.AccountServiceServer.
func (s *Service) SetPlan(ctx context.Context, req *pb.SetPlanRequest) (*pb.SetPlanResponse, error) {
	if err := s.cfg.Store.SetPlan(ctx, req.GetId(), catalog.Plan(req.GetPlan())); err != nil {
		return nil, s.storeError("set plan", err)
	}
	a, err := s.account(ctx, "set plan", req.GetId())
	if err != nil {
		return nil, err
	}
	return &pb.SetPlanResponse{Account: a}, nil
}

// SetEnabled implements pb.AccountServiceServer.
func (s *Service) SetEnabled(ctx context.Context, req *pb.SetEnabledRequest) (*pb.SetEnabledResponse, error) {
	if err := s.cfg.Store.SetEnabled(ctx, req.GetId(), req.GetEnabled()); err != nil {
		return nil, s.storeError("set enabled", err)
	}
	a, err := s.account(ctx, "set enabled", req.GetId())
	if err != nil {
		return nil, err
	}
	return &pb.SetEnabledResponse{Account: a}, nil
}

// Credit implements pb.AccountServiceServer.
func (s *Service) Credit(ctx context.Context, req *pb.CreditRequest) (*pb.CreditResponse, error) {
	amount, err := ParseCredits(req.GetAmount())
	if err != nil {
		return nil, invalid("%v", err)
	}
	if amount == 0 {
		return nil, invalid("credit amount is zero: give a positive amount to add credits or a negative one to take them away")
	}
	note := req.GetNote()
	if note == "" {
		note = "credit by admin"
		if amount < 0 {
			note = "correction by admin"
		}
	}
	if _, err := s.cfg.Store.Credit(ctx, req.GetId(), amount, note); err != nil {
		return nil, s.storeError("credit", err)
	}
	a, err := s.account(ctx, "credit", req.GetId())
	if err != nil {
		return nil, err
	}
	return &pb.CreditResponse{Account: a}, nil
}

// SetTPMOverride implements pb.AccountServiceServer.
func (s *Service) SetTPMOverride(ctx context.Context, req *pb.SetTPMOverrideRequest) (*pb.SetTPMOverrideResponse, error) {
	if s.cfg.Catalog != nil && !served(s.cfg.Catalog, req.GetModel()) {
		return nil, invalid("model %s is not in the catalog (`tollgate models` lists them)", errtext.Quote(req.GetModel()))
	}
	if err := s.cfg.Store.SetTPMOverride(ctx, req.GetId(), req.GetModel(), req.GetTokensPerMinute()); err != nil {
		return nil, s.storeError("set TPM override", err)
	}
	a, err := s.account(ctx, "set TPM override", req.GetId())
	if err != nil {
		return nil, err
	}
	return &pb.SetTPMOverrideResponse{Account: a}, nil
}

// served reports whether any provider in c serves model: TPM limits are
// kept per model name, whatever the provider.
func served(c *catalog.Catalog, model string) bool {
	for _, m := range c.All() {
		if m.Name == model {
			return true
		}
	}
	return false
}
