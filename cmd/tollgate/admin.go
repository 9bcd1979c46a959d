package main

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tollgate-dev/tollgate/pkg/auth"
	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/ledger"
	"github.com/tollgate-dev/tollgate/pkg/mockprovider"
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
		since                                      time.Duration
		limit                                      int
		asJSON                                     bool
	)
	cmd := &cobra.Command{
		Use:   "usage",
		Short: "Print usage records from the ledger in a data dir",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := filepath.Join(dataDir, "usage.db")
			if _, err := os.Stat(path); err != nil {
				return fmt.Errorf("no usage ledger in %s (run `tollgate dev` or `tollgate serve` with --data-dir %s first)", dataDir, dataDir)
			}
			st, err := ledger.OpenSQLite(cmd.Context(), path)
			if err != nil {
				return err
			}
			defer st.Close()
			f := ledger.Filter{Account: account, Project: project, Model: model, Provider: provider, Limit: limit}
			if since > 0 {
				f.Since = time.Now().Add(-since)
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
	f.StringVar(&provider, "provider", "", "only this provider")
	f.StringVar(&model, "model", "", "only this model")
	f.DurationVar(&since, "since", 0, "only records newer than this (e.g. 24h)")
	f.IntVar(&limit, "limit", 0, "at most this many records (0: all)")
	f.BoolVar(&asJSON, "json", false, "one JSON object per line")
	return cmd
}

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Mint, inspect and revoke gateway tokens"}
	var dataDir, account, project string
	var ttl time.Duration
	mint := &cobra.Command{
		Use:   "mint",
		Short: "Mint a gateway token with the data dir's signing key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if account == "" || project == "" {
				return fmt.Errorf("--account and --project are required")
			}
			s, err := auth.LoadOrCreateSigner(dataDir)
			if err != nil {
				return err
			}
			tok, err := s.Mint(auth.Claims{Account: account, Project: project, ExpiresAt: time.Now().Add(ttl)})
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), tok)
			return err
		},
	}
	mint.Flags().StringVar(&dataDir, "data-dir", defaultDataDir(), "data dir holding the signing key")
	mint.Flags().StringVar(&account, "account", "", "account the token bills")
	mint.Flags().StringVar(&project, "project", "", "project the token belongs to")
	mint.Flags().DurationVar(&ttl, "ttl", 30*24*time.Hour, "lifetime")

	inspect := &cobra.Command{
		Use:   "inspect TOKEN",
		Short: "Decode a token's claims and check it against the data dir's key",
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
			if s, err := auth.LoadOrCreateSigner(dataDir); err == nil {
				v := auth.NewVerifier(map[string]ed25519.PublicKey{s.KeyID(): s.PublicKey()}, auth.NewFileRevocations(filepath.Join(dataDir, "revoked")))
				if _, err := v.Verify(args[0], time.Now()); err != nil {
					out["valid"], out["error"] = false, err.Error()
				} else {
					out["valid"] = true
				}
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(out)
		},
	}
	inspect.Flags().StringVar(&dataDir, "data-dir", defaultDataDir(), "data dir holding the signing key")

	revoke := &cobra.Command{
		Use:   "revoke TOKEN",
		Short: "Revoke a token (by the token itself or its token id); a running gateway on the data dir picks it up",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if c, err := auth.Parse(id); err == nil {
				id = c.TokenID
			}
			f, err := os.OpenFile(filepath.Join(dataDir, "revoked"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = fmt.Fprintln(f, id)
			return err
		},
	}
	revoke.Flags().StringVar(&dataDir, "data-dir", defaultDataDir(), "data dir of the gateway")
	cmd.AddCommand(mint, inspect, revoke)
	return cmd
}
