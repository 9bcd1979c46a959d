package ledger

import (
	"errors"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/catalog"
)

func testAccounts(t *testing.T, s *DB, _ backendEnv) {
	ctx := t.Context()
	before := time.Now().Add(-time.Second)
	a, err := s.CreateAccount(ctx, "acme", catalog.PlanPro, 5_000_000)
	if err != nil {
		t.Fatal(err)
	}
	if a.ID != "acme" || a.Plan != catalog.PlanPro || !a.Enabled || a.Balance != 5_000_000 || a.Created.Before(before) {
		t.Errorf("CreateAccount = %+v", a)
	}
	if _, err := s.CreateAccount(ctx, "acme", catalog.PlanFree, 0); !errors.Is(err, ErrExists) {
		t.Errorf("second CreateAccount = %v, want ErrExists", err)
	}
	if _, err := s.CreateAccount(ctx, "zeta", catalog.PlanFree, 0); err != nil {
		t.Fatal(err)
	}

	got, err := s.GetAccount(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if !got.Created.Equal(a.Created) || got.Balance != a.Balance || got.Plan != a.Plan || !got.Enabled {
		t.Errorf("GetAccount = %+v, want %+v", got, a)
	}

	if err := s.SetPlan(ctx, "acme", catalog.PlanEnterprise); err != nil {
		t.Fatal(err)
	}
	if err := s.SetEnabled(ctx, "acme", false); err != nil {
		t.Fatal(err)
	}
	for model, tpm := range map[string]int64{"gpt-4o": 2_000_000, "claude-sonnet-4-5": 900_000, "gone": 5} {
		if err := s.SetTPMOverride(ctx, "acme", model, tpm); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetTPMOverride(ctx, "acme", "gpt-4o", 3_000_000); err != nil { // replaces
		t.Fatal(err)
	}
	if err := s.SetTPMOverride(ctx, "acme", "gone", 0); err != nil { // removes
		t.Fatal(err)
	}
	bal, err := s.Credit(ctx, "acme", -1_250_000, "refund of invoice 7")
	if err != nil {
		t.Fatal(err)
	}
	if bal != 3_750_000 {
		t.Errorf("Credit returned balance %d, want 3750000", bal)
	}
	got, err = s.GetAccount(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	wantOverrides := map[string]int64{"gpt-4o": 3_000_000, "claude-sonnet-4-5": 900_000}
	if got.Plan != catalog.PlanEnterprise || got.Enabled || got.Balance != 3_750_000 || !maps.Equal(got.TPMOverrides, wantOverrides) {
		t.Errorf("after updates: %+v, want enterprise, disabled, 3750000, %v", got, wantOverrides)
	}
	entries, err := s.CreditEntries(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].Amount != 5_000_000 || entries[0].BalanceAfter != 5_000_000 || entries[0].Reason != "initial credits" ||
		entries[1].Amount != -1_250_000 || entries[1].BalanceAfter != 3_750_000 || entries[1].Reason != "refund of invoice 7" {
		t.Errorf("credit entries %+v", entries)
	}

	all, err := s.ListAccounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].ID != "acme" || all[1].ID != "zeta" || len(all[0].TPMOverrides) != 2 || all[1].TPMOverrides != nil {
		t.Errorf("ListAccounts = %+v", all)
	}
}

func testProjects(t *testing.T, s *DB, _ backendEnv) {
	ctx := t.Context()
	for _, a := range []string{"acme", "beta"} {
		if _, err := s.CreateAccount(ctx, a, catalog.PlanFree, 0); err != nil {
			t.Fatal(err)
		}
	}
	p, err := s.CreateProject(ctx, "shop", "acme", false)
	if err != nil {
		t.Fatal(err)
	}
	if p.ID != "shop" || p.Account != "acme" || p.Activated || p.RPM != 0 || p.TPM != 0 {
		t.Errorf("CreateProject = %+v", p)
	}
	if _, err := s.CreateProject(ctx, "shop", "beta", true); !errors.Is(err, ErrExists) {
		t.Errorf("project ids are global: CreateProject in another account = %v, want ErrExists", err)
	}
	if _, err := s.CreateProject(ctx, "blog", "acme", true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateProject(ctx, "api", "beta", false); err != nil {
		t.Fatal(err)
	}
	if err := s.ActivateProject(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	if err := s.ActivateProject(ctx, "shop"); err != nil {
		t.Errorf("activating twice: %v", err)
	}
	if err := s.SetProjectLimits(ctx, "shop", 60, 10_000); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetProject(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	if !got.Activated || got.RPM != 60 || got.TPM != 10_000 || !got.Created.Equal(p.Created) {
		t.Errorf("GetProject = %+v", got)
	}
	list, err := s.ListProjects(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != "blog" || list[1].ID != "shop" {
		t.Errorf("ListProjects(acme) = %+v", list)
	}
	if all, err := s.ListProjects(ctx, ""); err != nil || len(all) != 3 {
		t.Errorf("ListProjects(\"\") = %d projects, %v; want 3", len(all), err)
	}
	if list, err := s.ListProjects(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
		t.Errorf("ListProjects(nobody) = %v, %v; want ErrNotFound", list, err)
	}
}

func testAccountErrors(t *testing.T, s *DB, _ backendEnv) {
	ctx := t.Context()
	if _, err := s.CreateAccount(ctx, "acme", catalog.PlanFree, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateProject(ctx, "shop", "acme", false); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		op   func() error
		is   error
		msg  string // in the message
	}{
		{"uppercase id", func() error { _, err := s.CreateAccount(ctx, "Acme", catalog.PlanFree, 0); return err }, ErrInvalid, `account id "Acme"`},
		{"empty id", func() error { _, err := s.CreateAccount(ctx, "", catalog.PlanFree, 0); return err }, ErrInvalid, "account id"},
		{"trailing hyphen", func() error { _, err := s.CreateAccount(ctx, "acme-", catalog.PlanFree, 0); return err }, ErrInvalid, "letter or digit"},
		{"too long", func() error { _, err := s.CreateAccount(ctx, strings.Repeat("a", 64), catalog.PlanFree, 0); return err }, ErrInvalid, "63"},
		{"bad plan", func() error { _, err := s.CreateAccount(ctx, "new", "gold", 0); return err }, ErrInvalid, `plan "gold"`},
		{"huge credits", func() error { _, err := s.CreateAccount(ctx, "new", catalog.PlanFree, MaxCredits+1); return err }, ErrInvalid, "initial credits"},
		{"get missing", func() error { _, err := s.GetAccount(ctx, "nobody"); return err }, ErrNotFound, `account "nobody"`},
		{"set plan missing", func() error { return s.SetPlan(ctx, "nobody", catalog.PlanPro) }, ErrNotFound, `account "nobody"`},
		{"set plan bad", func() error { return s.SetPlan(ctx, "acme", "") }, ErrInvalid, "plan"},
		{"enable missing", func() error { return s.SetEnabled(ctx, "nobody", true) }, ErrNotFound, "nobody"},
		{"override missing", func() error { return s.SetTPMOverride(ctx, "nobody", "gpt-4o", 1) }, ErrNotFound, "nobody"},
		{"override negative", func() error { return s.SetTPMOverride(ctx, "acme", "gpt-4o", -1) }, ErrInvalid, "TPM override"},
		{"override no model", func() error { return s.SetTPMOverride(ctx, "acme", "", 1) }, ErrInvalid, "model"},
		{"credit missing", func() error { _, err := s.Credit(ctx, "nobody", 1, "x"); return err }, ErrNotFound, "nobody"},
		{"credit zero", func() error { _, err := s.Credit(ctx, "acme", 0, "x"); return err }, ErrInvalid, "non-zero"},
		{"credit no reason", func() error { _, err := s.Credit(ctx, "acme", 1, " "); return err }, ErrInvalid, "reason"},
		{"credit huge", func() error { _, err := s.Credit(ctx, "acme", -MaxCredits-1, "x"); return err }, ErrInvalid, "credit amount"},
		{"entries missing", func() error { _, err := s.CreditEntries(ctx, "nobody"); return err }, ErrNotFound, "nobody"},
		{"project of missing account", func() error { _, err := s.CreateProject(ctx, "p", "nobody", false); return err }, ErrNotFound, `account "nobody"`},
		{"project bad id", func() error { _, err := s.CreateProject(ctx, "a_b", "acme", false); return err }, ErrInvalid, `project id "a_b"`},
		{"get project missing", func() error { _, err := s.GetProject(ctx, "nope"); return err }, ErrNotFound, `project "nope"`},
		{"activate missing", func() error { return s.ActivateProject(ctx, "nope") }, ErrNotFound, `project "nope"`},
		{"limits negative", func() error { return s.SetProjectLimits(ctx, "shop", -1, 0) }, ErrInvalid, "project RPM"},
		{"limits missing", func() error { return s.SetProjectLimits(ctx, "nope", 1, 1) }, ErrNotFound, "nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.op()
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %v; want %v containing %q", err, tt.is, tt.msg)
			}
		})
	}
	// Nothing above changed the account.
	a, err := s.GetAccount(ctx, "acme")
	if err != nil || a.Balance != 0 || a.Plan != catalog.PlanFree || a.TPMOverrides != nil {
		t.Errorf("account after failed operations: %+v, %v", a, err)
	}
}

// TestCreditConcurrent credits one account from many goroutines: no update
// is lost, and the entries' running balances are consistent.
func testCreditConcurrent(t *testing.T, s *DB, _ backendEnv) {
	ctx := t.Context()
	if _, err := s.CreateAccount(ctx, "acme", catalog.PlanFree, 0); err != nil {
		t.Fatal(err)
	}
	const goroutines, each = 8, 25
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				amount := int64(g*1000 + i + 1)
				if g%2 == 1 {
					amount = -amount
				}
				if _, err := s.Credit(ctx, "acme", amount, "test"); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	entries, err := s.CreditEntries(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, e := range entries {
		sum += e.Amount
	}
	a, err := s.GetAccount(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != goroutines*each || a.Balance != sum {
		t.Errorf("%d entries summing to %d, balance %d; want %d entries and the balance equal to their sum", len(entries), sum, a.Balance, goroutines*each)
	}
	// In id order, each entry's balance is the previous one plus its
	// amount: the entries replay the balance.
	var running int64
	for i, e := range entries {
		running += e.Amount
		if e.BalanceAfter != running {
			t.Fatalf("entry %d: balance after %d, want %d", i, e.BalanceAfter, running)
		}
	}
}
