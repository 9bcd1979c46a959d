package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tollgate-dev/tollgate/pkg/admin"
	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/ledger"
	"github.com/tollgate-dev/tollgate/pkg/mockprovider"
	pb "github.com/tollgate-dev/tollgate/proto/tollgate/v1"
)

func newMockCmd() *cobra.Command {
	var listen string
	var delay time.Duration
	cmd := &cobra.Command{
		Use:   "mock",
		Short: "Serve the deterministic mock OpenAI, Anthropic and Gemini APIs under /openai, /anthropic and /gemini",
		Example: `  tollgate mock --listen 127.0.0.1:9000 &
  tollgate dev --upstream openai=http://127.0.0.1:9000/openai`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("listen %s: %w", listen, err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "tollgate mock: serving on http://%s (/openai, /anthropic, /gemini)\n", ln.Addr())
			srv := &http.Server{Handler: mockHandler(mockprovider.NewServers(mockprovider.Options{ChunkDelay: delay})), ReadHeaderTimeout: 10 * time.Second}
			go func() { <-cmd.Context().Done(); _ = srv.Close() }()
			if err := srv.Serve(ln); err != http.ErrServerClosed {
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:9000", "address to listen on")
	cmd.Flags().DurationVar(&delay, "chunk-delay", 0, "pause between streamed chunks")
	return cmd
}

func newModelsCmd() *cobra.Command {
	var catalogFile string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "models",
		Short: "List the served models with their prices and tokens-per-minute limits",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cat, err := loadCatalog(catalogFile)
			if err != nil {
				return err
			}
			models := cat.All()
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				for _, m := range models {
					if err := enc.Encode(m); err != nil {
						return err
					}
				}
				return nil
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PROVIDER\tMODEL\tFAMILY\tINPUT $/MTok\tCACHED\tCACHE WRITE\tOUTPUT\tTPM FREE\tTPM PERSONAL\tTPM PRO")
			for _, m := range models {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\n", m.Provider, m.Name, m.Family,
					catalog.FormatPrice(m.Price.Input), catalog.FormatPrice(m.Price.CachedInput),
					catalog.FormatPrice(m.Price.CacheWrite), catalog.FormatPrice(m.Price.Output),
					m.TPM["free"], m.TPM["personal"], m.TPM["pro"])
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&catalogFile, "catalog", "", "YAML file that overrides or extends the model catalog")
	cmd.Flags().BoolVar(&asJSON, "json", false, "one JSON object per model")
	return cmd
}

func newUsageCmd() *cobra.Command {
	var (
		dataDir, account, project, model, provider string
		since, until, by                           string
		limit                                      int
		asJSON, records                            bool
	)
	cmd := &cobra.Command{
		Use:   "usage [--account A] [--project P] [--model M] [--since 24h] [--by hour|day|model] [--json]",
		Short: "Usage from the ledger in a data dir: the records, or tokens by kind, requests, credits, rejections",
		Long: `Sums the ledger's hourly roll-ups: tokens by kind, requests, credits and
rejections by reason, in one total or by hour, day (UTC) or model. --since and
--until take a duration before now (24h, 90m) or an RFC 3339 time; --since
defaults to 24h. With --records it lists the usage records themselves instead.

--json alone (no --account, --project, --model, --since, --until or --by)
prints the records, one JSON object per line, the form scripts read; with any
of them it prints the summary as JSON.`,
		Example: `  tollgate usage --json                      # every record, one JSON object per line
  tollgate usage --account acme --since 24h --by hour
  tollgate usage --account acme --by model --json
  tollgate usage --records --account acme --limit 20`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The ledger the gateways share ($TOLLGATE_LEDGER_URL), else the
			// data dir's SQLite file, which must exist: reading must not
			// create an empty one under a mistyped path.
			shared := os.Getenv("TOLLGATE_LEDGER_URL")
			if shared == "" && !hasLedger(dataDir) {
				return fmt.Errorf("no usage ledger in %s (run `tollgate dev` or `tollgate serve` with --data-dir %s first, or set $TOLLGATE_LEDGER_URL)", dataDir, dataDir)
			}
			awaitSpooled(cmd, dataDir)
			summaryFlags := false
			for _, name := range []string{"account", "project", "model", "since", "until", "by"} {
				summaryFlags = summaryFlags || cmd.Flags().Changed(name)
			}
			if asJSON && !summaryFlags {
				records = true // the records, one JSON object per line
			}
			if !records {
				if provider != "" || limit != 0 {
					return fmt.Errorf("--provider and --limit apply to --records only")
				}
				return withAdmin(cmd, dataDir, adminOptions{}, func(a *localAdmin) error {
					return summarizeUsage(cmd, a, usageFlags{account: account, project: project, model: model, since: since, until: until, by: by, json: asJSON})
				})
			}
			if by != "" || until != "" {
				return fmt.Errorf("--by and --until apply to the summary, not to --records")
			}
			st, err := ledger.Open(cmd.Context(), ledgerURL(dataDir, shared))
			if err != nil {
				return err
			}
			defer st.Close()
			f := ledger.Filter{Account: account, Project: project, Model: model, Provider: provider, Limit: limit}
			if since != "" {
				if f.Since, err = admin.ParseTimeBound(since, time.Now()); err != nil {
					return fmt.Errorf("--since %w", err)
				}
			}
			recs, err := st.ListUsage(cmd.Context(), f)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				for _, r := range recs {
					if err := enc.Encode(r); err != nil {
						return err
					}
				}
				return nil
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tREQUEST\tACCOUNT/PROJECT\tMODEL\tSTATUS\tINPUT\tCACHED\tCACHE WRITE\tOUTPUT\tREASONING\tLATENCY")
			for _, r := range recs {
				est := ""
				if r.Estimated {
					est = " (est.)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s/%s\t%s/%s\t%s\t%d\t%d\t%d\t%d%s\t%d\t%dms\n",
					r.Time.Local().Format(time.DateTime), r.RequestID, r.Account, r.Project, r.Provider, r.Model, r.Status,
					r.Input, r.CachedInput, r.CacheWrite, r.Output, est, r.Reasoning, r.LatencyMS)
			}
			return tw.Flush()
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", defaultDataDir(), "data dir holding usage.db ($TOLLGATE_DATA_DIR)")
	f.StringVar(&account, "account", "", "only this account")
	f.StringVar(&project, "project", "", "only this project")
	f.StringVar(&model, "model", "", "only this model")
	f.StringVar(&since, "since", "", "from this long ago (24h) or this RFC 3339 time (summary default: 24h; records: all)")
	f.StringVar(&until, "until", "", "up to this long ago or this RFC 3339 time (summary only)")
	f.StringVar(&by, "by", "", "hour, day or model (summary only; default: one total)")
	f.BoolVar(&asJSON, "json", false, "JSON: the records, one per line (alone or with --records); with summary flags, the admin API's GetUsage answer")
	f.BoolVar(&records, "records", false, "list the usage records themselves")
	f.StringVar(&provider, "provider", "", "only this provider (--records only)")
	f.IntVar(&limit, "limit", 0, "at most this many records (--records only; 0: all)")
	return cmd
}

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Mint, inspect and revoke gateway tokens"}
	var dataDir, keysDir, account, project string
	var ttl time.Duration
	mint := &cobra.Command{
		Use:   "mint --project NAME",
		Short: "Mint a gateway token for a project, billed to the project's account",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if project == "" {
				return fmt.Errorf("--project is required (create one with `tollgate project create`)")
			}
			return withAdmin(cmd, dataDir, adminOptions{mint: true, dir: keysDir}, func(a *localAdmin) error {
				if account != "" {
					p, err := a.GetProject(cmd.Context(), &pb.GetProjectRequest{Id: project})
					if err != nil {
						return err
					}
					if p.GetProject().GetAccount() != account {
						return fmt.Errorf("project %q belongs to account %q, not %q", project, p.GetProject().GetAccount(), account)
					}
				}
				r, err := a.MintToken(cmd.Context(), &pb.MintTokenRequest{Project: project, Ttl: durationpb.New(ttl)})
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(cmd.OutOrStdout(), r.GetToken())
				return err
			})
		},
	}
	mint.Flags().StringVar(&dataDir, "data-dir", defaultDataDir(), "data dir holding the signing key")
	mint.Flags().StringVar(&keysDir, "signing-keys-dir", os.Getenv("TOLLGATE_SIGNING_KEYS_DIR"), "the replicas' shared signing_keys_dir, whose last kid signs ($TOLLGATE_SIGNING_KEYS_DIR); default: the data dir's key")
	mint.Flags().StringVar(&account, "account", "", "check that the project belongs to this account")
	mint.Flags().StringVar(&project, "project", "", "project the token belongs to")
	mint.Flags().DurationVar(&ttl, "ttl", 30*24*time.Hour, "lifetime")

	inspect := &cobra.Command{
		Use:   "inspect TOKEN",
		Short: "Decode a token's claims and check it against the data dir's key (exit 1 if it is not valid)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := auth.Parse(args[0])
			if err != nil {
				return err
			}
			out := map[string]any{
				"key_id": c.KeyID, "account": c.Account, "project": c.Project, "token_id": c.TokenID,
				"issued_at": c.IssuedAt.UTC(), "expires_at": c.ExpiresAt.UTC(),
			}
			// With no key to check against, the claims are only decoded and
			// the token is not valid: a mistyped --data-dir must not let a
			// script take a forged token for a good one.
			keys, err := publicKeys(dataDir, keysDir)
			switch {
			case keysDir == "" && (len(keys) == 0 && err == nil || errors.Is(err, fs.ErrNotExist)):
				out["valid"], out["error"] = false, fmt.Sprintf("no signing key in %s to check it against", filepath.Join(dataDir, "keys"))
			case err != nil:
				out["valid"], out["error"] = false, err.Error()
			default:
				revoked, err := ledgerRevocations(cmd.Context(), dataDir)
				if err != nil {
					return err
				}
				file, err := auth.NewFileRevocations(filepath.Join(dataDir, "revoked"))
				if err != nil {
					return err
				}
				v := auth.NewVerifier(keys, auth.AnyRevocations{revoked, file})
				if _, err := v.Verify(args[0], time.Now()); err != nil {
					out["valid"], out["error"] = false, err.Error()
				} else {
					out["valid"] = true
				}
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			if err := enc.Encode(out); err != nil {
				return err
			}
			// Scripts test the exit code: a token the gateway would refuse fails.
			if out["valid"] == false {
				return fmt.Errorf("the token is not valid: %s", out["error"])
			}
			return nil
		},
	}
	inspect.Flags().StringVar(&dataDir, "data-dir", defaultDataDir(), "data dir holding the signing key")
	inspect.Flags().StringVar(&keysDir, "signing-keys-dir", os.Getenv("TOLLGATE_SIGNING_KEYS_DIR"), "check against the replicas' shared signing_keys_dir ($TOLLGATE_SIGNING_KEYS_DIR) instead of the data dir's key")

	revoke := &cobra.Command{
		Use:   "revoke TOKEN",
		Short: "Revoke a token (by the token itself or its token id); a running gateway on the data dir picks it up",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &pb.RevokeTokenRequest{TokenId: args[0]}
			if _, err := auth.Parse(args[0]); err == nil {
				req = &pb.RevokeTokenRequest{Token: args[0]}
			}
			return withAdmin(cmd, dataDir, adminOptions{}, func(a *localAdmin) error {
				_, err := a.RevokeToken(cmd.Context(), req)
				return err
			})
		},
	}
	revoke.Flags().StringVar(&dataDir, "data-dir", defaultDataDir(), "data dir of the gateway")
	cmd.AddCommand(mint, inspect, revoke)
	return cmd
}

// ledgerRevocations reads the revoked token ids from the ledger openAdmin
// opens.
// publicKeys are the keys tokens are checked with: the shared
// signing_keys_dir's, else the data dir's. Unlike loadKeys it never makes a
// key: checking a token needs one that signed it.
func publicKeys(dataDir, signingKeysDir string) (map[string]ed25519.PublicKey, error) {
	if signingKeysDir != "" {
		_, keys, err := auth.LoadKeyDir(signingKeysDir)
		return keys, err
	}
	return auth.LoadKeyring(dataDir)
}

func ledgerRevocations(ctx context.Context, dataDir string) (*auth.RevocationSet, error) {
	if os.Getenv("TOLLGATE_LEDGER_URL") == "" && !hasLedger(dataDir) {
		return auth.NewRevocationSet(), nil // no ledger, no revocations in it
	}
	a, err := openAdmin(ctx, dataDir, adminOptions{})
	if err != nil {
		return nil, err
	}
	defer a.Close()
	rs, err := a.store.Revocations(ctx, time.Time{})
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(rs))
	for i, r := range rs {
		ids[i] = r.TokenID
	}
	return auth.NewRevocationSet(ids...), nil
}
