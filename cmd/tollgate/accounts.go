package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/tollgate-dev/tollgate/pkg/admin"
	"github.com/tollgate-dev/tollgate/pkg/ledger"
	pb "github.com/tollgate-dev/tollgate/proto/tollgate/v1"
)

// The admin commands call the admin API's implementation in-process on a
// data dir's ledger, so they work with no gateway running and beside one
// (the ledger is SQLite in WAL mode), and say exactly what the API would.

// localAdmin is the admin service over a data dir.
type localAdmin struct {
	*admin.Service
	store *ledger.DB
}

// adminOptions are what some admin commands need beyond the ledger.
type adminOptions struct {
	// mint loads a signing key: dir, the replicas' shared
	// signing_keys_dir, whose last kid signs; empty: the data dir's key,
	// created on first use.
	mint bool
	dir  string
	// catalog is the YAML file the gateways extend the catalog with, so
	// that models it adds can be named.
	catalog string
	// create makes the data dir's ledger when there is none; only account
	// create does, so a mistyped --data-dir is an error, not a new ledger.
	create bool
}

// openAdmin opens the data dir's ledger (opts.create makes it on first
// use), or the one $TOLLGATE_LEDGER_URL names (as tollgate serve does, so
// a command run in a gateway's pod works on the shared ledger); opts.mint
// also loads the signing key. Revocations go to the ledger, which every
// gateway on it polls.
func openAdmin(ctx context.Context, dataDir string, opts adminOptions) (*localAdmin, error) {
	shared := os.Getenv("TOLLGATE_LEDGER_URL")
	if shared == "" && !opts.create && !hasLedger(dataDir) {
		return nil, fmt.Errorf("no ledger in %s: create an account there first (tollgate account create NAME --plan P --data-dir %s), or give the --data-dir of a gateway, or set $TOLLGATE_LEDGER_URL", dataDir, dataDir)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	store, err := ledger.Open(ctx, ledgerURL(dataDir, shared))
	if err != nil {
		return nil, err
	}
	cfg := admin.Config{Store: store, Revoker: store}
	if opts.mint {
		signer, _, err := loadKeys(dataDir, opts.dir)
		if err != nil {
			store.Close()
			return nil, err
		}
		cfg.Signer = signer
	}
	if cfg.Catalog, err = loadCatalog(opts.catalog); err != nil {
		store.Close()
		return nil, err
	}
	return &localAdmin{Service: admin.New(cfg), store: store}, nil
}

func (a *localAdmin) Close() error { return a.store.Close() }

// hasLedger reports whether dataDir holds a SQLite ledger.
func hasLedger(dataDir string) bool {
	_, err := os.Stat(filepath.Join(dataDir, "usage.db"))
	return err == nil
}

// withAdmin runs fn on the data dir's admin service and turns an API error
// into its message alone, which is written for people.
func withAdmin(cmd *cobra.Command, dataDir string, opts adminOptions, fn func(*localAdmin) error) error {
	a, err := openAdmin(cmd.Context(), dataDir, opts)
	if err != nil {
		return err
	}
	defer a.Close()
	if err := fn(a); err != nil {
		if st, ok := status.FromError(err); ok {
			return errors.New(st.Message())
		}
		return err
	}
	return nil
}

func dataDirFlag(cmd *cobra.Command, dst *string) {
	cmd.PersistentFlags().StringVar(dst, "data-dir", defaultDataDir(), "data dir holding the ledger and keys ($TOLLGATE_DATA_DIR)")
}

func printJSON(w io.Writer, m proto.Message) error {
	b, err := admin.MarshalJSON(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func printAccount(w io.Writer, a *pb.Account, projects []*pb.Project) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "account\t%s\n", a.GetId())
	fmt.Fprintf(tw, "plan\t%s\n", a.GetPlan())
	fmt.Fprintf(tw, "enabled\t%s\n", yesNo(a.GetEnabled()))
	fmt.Fprintf(tw, "balance\t%s credits\n", a.GetBalance().GetDecimal())
	for _, m := range slices.Sorted(maps.Keys(a.GetTpmOverrides())) {
		fmt.Fprintf(tw, "tpm override\t%s: %d tokens/minute\n", m, a.GetTpmOverrides()[m])
	}
	if projects != nil {
		var names []string
		for _, p := range projects {
			state := "activated"
			if !p.GetActivated() {
				state = "not activated"
			}
			names = append(names, fmt.Sprintf("%s (%s)", p.GetId(), state))
		}
		if len(names) == 0 {
			names = []string{"none"}
		}
		fmt.Fprintf(tw, "projects\t%s\n", strings.Join(names, ", "))
	}
	return tw.Flush()
}

func newAccountCmd() *cobra.Command {
	var dataDir, catalogFile string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "account",
		Short: "Create and manage accounts: plan, enabled or not, credit balance",
		Example: `  tollgate account create acme --plan pro --credits 100
  tollgate account credit acme 12.5
  tollgate account credit acme -3 --note "refund reversed"
  tollgate account disable acme`,
	}
	dataDirFlag(cmd, &dataDir)
	cmd.PersistentFlags().BoolVar(&asJSON, "json", false, "print the account as JSON (the admin API's form)")
	show := func(c *cobra.Command, a *localAdmin, acc *pb.Account) error {
		if asJSON {
			return printJSON(c.OutOrStdout(), acc)
		}
		ps, err := a.ListProjects(c.Context(), &pb.ListProjectsRequest{Account: acc.GetId()})
		if err != nil {
			return err
		}
		return printAccount(c.OutOrStdout(), acc, ps.GetProjects())
	}

	var plan, opening string
	create := &cobra.Command{
		Use:   "create NAME --plan free|personal|pro|enterprise [--credits N]",
		Short: "Create an account (enabled)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if plan == "" {
				return errors.New("--plan is required: free, personal, pro or enterprise")
			}
			return withAdmin(c, dataDir, adminOptions{create: true}, func(a *localAdmin) error {
				r, err := a.CreateAccount(c.Context(), &pb.CreateAccountRequest{Id: args[0], Plan: plan, Credits: opening})
				if err != nil {
					return err
				}
				return show(c, a, r.GetAccount())
			})
		},
	}
	create.Flags().StringVar(&plan, "plan", "", "free, personal, pro or enterprise")
	create.Flags().StringVar(&opening, "credits", "", "opening balance in credits (decimal, e.g. 100 or 12.5)")

	showCmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show an account: plan, enabled, balance, overrides, projects",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return withAdmin(c, dataDir, adminOptions{}, func(a *localAdmin) error {
				r, err := a.GetAccount(c.Context(), &pb.GetAccountRequest{Id: args[0]})
				if err != nil {
					return err
				}
				return show(c, a, r.GetAccount())
			})
		},
	}

	list := &cobra.Command{
		Use:   "list",
		Short: "List every account",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return withAdmin(c, dataDir, adminOptions{}, func(a *localAdmin) error {
				r, err := a.ListAccounts(c.Context(), &pb.ListAccountsRequest{})
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(c.OutOrStdout(), r)
				}
				tw := tabwriter.NewWriter(c.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ACCOUNT\tPLAN\tENABLED\tBALANCE")
				for _, acc := range r.GetAccounts() {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", acc.GetId(), acc.GetPlan(), yesNo(acc.GetEnabled()), acc.GetBalance().GetDecimal())
				}
				return tw.Flush()
			})
		},
	}

	setPlan := &cobra.Command{
		Use:   "set-plan NAME PLAN",
		Short: "Move an account to another plan (free, personal, pro or enterprise)",
		Args:  cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			return withAdmin(c, dataDir, adminOptions{}, func(a *localAdmin) error {
				r, err := a.SetPlan(c.Context(), &pb.SetPlanRequest{Id: args[0], Plan: args[1]})
				if err != nil {
					return err
				}
				return show(c, a, r.GetAccount())
			})
		},
	}

	enabled := func(use, short string, on bool) *cobra.Command {
		return &cobra.Command{
			Use:   use + " NAME",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(c *cobra.Command, args []string) error {
				return withAdmin(c, dataDir, adminOptions{}, func(a *localAdmin) error {
					r, err := a.SetEnabled(c.Context(), &pb.SetEnabledRequest{Id: args[0], Enabled: on})
					if err != nil {
						return err
					}
					return show(c, a, r.GetAccount())
				})
			},
		}
	}

	var note string
	credit := &cobra.Command{
		Use:   "credit NAME AMOUNT [--note TEXT]",
		Short: "Add credits to an account's balance (a negative AMOUNT takes them away)",
		Long: `Adds AMOUNT credits, a decimal with at most 6 places (12.5 is exactly
12,500,000 micro-credits). A negative AMOUNT is a correction; the balance may
go below zero. Flags may come before NAME or after AMOUNT.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			// Flags stop at NAME (so "-3" is an amount, not a flag); any
			// after AMOUNT are parsed here. A "--" a user put in out of
			// habit is dropped.
			if i := slices.Index(args, "--"); i >= 0 {
				args = slices.Delete(args, i, i+1)
			}
			if len(args) < 2 {
				return errors.New("want NAME AMOUNT")
			}
			if len(args) > 2 {
				if err := c.Flags().Parse(args[2:]); err != nil {
					return err
				}
				if c.Flags().NArg() > 0 {
					return fmt.Errorf("unexpected arguments %q: want NAME AMOUNT", c.Flags().Args())
				}
			}
			return withAdmin(c, dataDir, adminOptions{}, func(a *localAdmin) error {
				r, err := a.Credit(c.Context(), &pb.CreditRequest{Id: args[0], Amount: args[1], Note: note})
				if err != nil {
					return err
				}
				return show(c, a, r.GetAccount())
			})
		},
	}
	credit.Flags().SetInterspersed(false)
	credit.Flags().StringVar(&note, "note", "", "why, kept with the credit entry")

	setTPM := &cobra.Command{
		Use:   "set-tpm NAME MODEL TOKENS_PER_MINUTE",
		Short: "Set the account's tokens-per-minute limit for one model, in place of its plan's (0 removes it)",
		Args:  cobra.ExactArgs(3),
		RunE: func(c *cobra.Command, args []string) error {
			tpm, err := strconv.ParseInt(args[2], 10, 64)
			if err != nil || tpm < 0 {
				return fmt.Errorf("tokens per minute %q: want a whole number, 0 to remove the override", args[2])
			}
			return withAdmin(c, dataDir, adminOptions{catalog: catalogFile}, func(a *localAdmin) error {
				r, err := a.SetTPMOverride(c.Context(), &pb.SetTPMOverrideRequest{Id: args[0], Model: args[1], TokensPerMinute: tpm})
				if err != nil {
					return err
				}
				return show(c, a, r.GetAccount())
			})
		},
	}

	setTPM.Flags().StringVar(&catalogFile, "catalog", "", "the gateways' catalog file, to name a model it adds")

	cmd.AddCommand(create, showCmd, list, setPlan,
		enabled("disable", "Disable an account's AI features: its tokens are refused", false),
		enabled("enable", "Enable an account's AI features again", true),
		credit, setTPM)
	return cmd
}

func newProjectCmd() *cobra.Command {
	var dataDir string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "project",
		Short: "Create and activate projects (the scope of a gateway token)",
		Example: `  tollgate project create web --account acme --activate
  tollgate token mint --project web`,
	}
	dataDirFlag(cmd, &dataDir)
	cmd.PersistentFlags().BoolVar(&asJSON, "json", false, "print JSON (the admin API's form)")
	show := func(c *cobra.Command, p *pb.Project) error {
		if asJSON {
			return printJSON(c.OutOrStdout(), p)
		}
		tw := tabwriter.NewWriter(c.OutOrStdout(), 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "project\t%s\naccount\t%s\nactivated\t%s\n", p.GetId(), p.GetAccount(), yesNo(p.GetActivated()))
		if p.GetRequestsPerMinute() > 0 {
			fmt.Fprintf(tw, "requests/minute\t%d\n", p.GetRequestsPerMinute())
		}
		if p.GetTokensPerMinute() > 0 {
			fmt.Fprintf(tw, "tokens/minute\t%d\n", p.GetTokensPerMinute())
		}
		return tw.Flush()
	}

	var account string
	var activate bool
	create := &cobra.Command{
		Use:   "create NAME --account ACCOUNT [--activate]",
		Short: "Create a project of an account (not activated unless --activate)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if account == "" {
				return errors.New("--account is required")
			}
			return withAdmin(c, dataDir, adminOptions{}, func(a *localAdmin) error {
				r, err := a.CreateProject(c.Context(), &pb.CreateProjectRequest{Id: args[0], Account: account, Activate: activate})
				if err != nil {
					return err
				}
				return show(c, r.GetProject())
			})
		},
	}
	create.Flags().StringVar(&account, "account", "", "the account the project bills")
	create.Flags().BoolVar(&activate, "activate", false, "activate it now (its tokens are refused until it is)")

	activateCmd := &cobra.Command{
		Use:   "activate NAME",
		Short: "Activate a project: its tokens are accepted from now on",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return withAdmin(c, dataDir, adminOptions{}, func(a *localAdmin) error {
				r, err := a.ActivateProject(c.Context(), &pb.ActivateProjectRequest{Id: args[0]})
				if err != nil {
					return err
				}
				return show(c, r.GetProject())
			})
		},
	}

	showCmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a project",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return withAdmin(c, dataDir, adminOptions{}, func(a *localAdmin) error {
				r, err := a.GetProject(c.Context(), &pb.GetProjectRequest{Id: args[0]})
				if err != nil {
					return err
				}
				return show(c, r.GetProject())
			})
		},
	}

	var rpm, tpm int64
	limits := &cobra.Command{
		Use:   "set-limits NAME [--rpm N] [--tpm N]",
		Short: "Set the project's own requests and tokens per minute (0: none); a limit not given is kept",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			setRPM, setTPM := c.Flags().Changed("rpm"), c.Flags().Changed("tpm")
			if !setRPM && !setTPM {
				return errors.New("give --rpm, --tpm or both (0 removes a limit)")
			}
			return withAdmin(c, dataDir, adminOptions{}, func(a *localAdmin) error {
				req := &pb.SetProjectLimitsRequest{Id: args[0], RequestsPerMinute: rpm, TokensPerMinute: tpm}
				// SetProjectLimits sets both limits; a flag left out must
				// not silently remove a limit already set, so it keeps the
				// project's current value.
				if !setRPM || !setTPM {
					cur, err := a.GetProject(c.Context(), &pb.GetProjectRequest{Id: args[0]})
					if err != nil {
						return err
					}
					if !setRPM {
						req.RequestsPerMinute = cur.GetProject().GetRequestsPerMinute()
					}
					if !setTPM {
						req.TokensPerMinute = cur.GetProject().GetTokensPerMinute()
					}
				}
				r, err := a.SetProjectLimits(c.Context(), req)
				if err != nil {
					return err
				}
				return show(c, r.GetProject())
			})
		},
	}
	limits.Flags().Int64Var(&rpm, "rpm", 0, "requests per minute (0: no limit of its own)")
	limits.Flags().Int64Var(&tpm, "tpm", 0, "tokens per minute (0: no limit of its own)")

	cmd.AddCommand(create, activateCmd, showCmd, limits)
	return cmd
}
