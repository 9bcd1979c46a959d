package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tollgate-dev/tollgate/pkg/admin"
	"github.com/tollgate-dev/tollgate/pkg/ledger"
	pb "github.com/tollgate-dev/tollgate/proto/tollgate/v1"
)

type usageFlags struct {
	account, project, model, since, until, by string
	json                                      bool
}

// summarizeUsage prints the GetUsage answer for f as a table or as JSON.
func summarizeUsage(cmd *cobra.Command, a *localAdmin, f usageFlags) error {
	now := time.Now()
	req := &pb.GetUsageRequest{Account: f.account, Project: f.project, Model: f.model}
	for _, b := range []struct {
		flag, v string
		dst     **timestamppb.Timestamp
	}{{"--since", f.since, &req.Since}, {"--until", f.until, &req.Until}} {
		if b.v == "" {
			continue
		}
		t, err := admin.ParseTimeBound(b.v, now)
		if err != nil {
			return fmt.Errorf("%s %w", b.flag, err)
		}
		*b.dst = timestamppb.New(t)
	}
	by, err := admin.ParseGroupBy(f.by)
	if err != nil {
		return fmt.Errorf("--by: %w", err)
	}
	req.By = by
	resp, err := a.GetUsage(cmd.Context(), req)
	if err != nil {
		return err
	}
	if f.json {
		return printJSON(cmd.OutOrStdout(), resp)
	}
	w := cmd.OutOrStdout()
	scope := "all accounts"
	if f.account != "" {
		scope = "account " + f.account
	}
	for _, part := range []struct{ what, v string }{{"project", f.project}, {"model", f.model}} {
		if part.v != "" {
			scope += ", " + part.what + " " + part.v
		}
	}
	from := now.Add(-admin.DefaultUsageWindow)
	if req.Since != nil {
		from = req.Since.AsTime()
	}
	fmt.Fprintf(w, "Usage of %s since %s", scope, from.UTC().Format("2006-01-02 15:04 UTC"))
	if req.Until != nil {
		fmt.Fprintf(w, " until %s", req.Until.AsTime().UTC().Format("2006-01-02 15:04 UTC"))
	}
	fmt.Fprintln(w, " (whole hours)")

	first := map[pb.GroupBy]string{pb.GroupBy_GROUP_BY_HOUR: "HOUR (UTC)", pb.GroupBy_GROUP_BY_DAY: "DAY (UTC)", pb.GroupBy_GROUP_BY_MODEL: "MODEL"}[by]
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	header := "REQUESTS\tINPUT\tCACHED\tCACHE WRITE\tOUTPUT\tREASONING\tCREDITS\tREJECTED\t"
	if first != "" {
		header = first + "\t" + header
	}
	fmt.Fprintln(tw, header)
	row := func(label string, b *pb.UsageBucket) {
		if first != "" {
			fmt.Fprintf(tw, "%s\t", label)
		}
		t := b.GetTokens()
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t\n", b.GetRequests(), t.GetInput(), t.GetCachedInput(), t.GetCacheWrite(),
			t.GetOutput(), t.GetReasoning(), b.GetCredits().GetDecimal(), rejections(b.GetRejections()))
	}
	if first == "" {
		// Not grouped: the only bucket is the total, printed once.
		row("", resp.GetTotal())
		return tw.Flush()
	}
	for _, b := range resp.GetBuckets() {
		label := b.GetModel()
		switch by {
		case pb.GroupBy_GROUP_BY_HOUR:
			label = b.GetStart().AsTime().UTC().Format("2006-01-02 15:04")
		case pb.GroupBy_GROUP_BY_DAY:
			label = b.GetStart().AsTime().UTC().Format("2006-01-02")
		}
		row(label, b)
	}
	row("TOTAL", resp.GetTotal())
	return tw.Flush()
}

// rejections renders counts by reason: "rate_limited=2 insufficient_credits=1".
func rejections(m map[string]int64) string {
	if len(m) == 0 {
		return "0"
	}
	var parts []string
	for _, r := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", r, m[r]))
	}
	return strings.Join(parts, " ")
}

// awaitSpooled gives a gateway running on dataDir the moment it needs to
// store the usage it has spooled (up to its 50 ms flush interval), so that
// usage read right after a request counts it. What cannot be stored now
// is named on stderr rather than silently left out.
func awaitSpooled(cmd *cobra.Command, dataDir string) {
	ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Second)
	defer cancel()
	dir := spoolDir(dataDir)
	pending, err := ledger.AwaitSpool(ctx, dir)
	switch {
	case err != nil:
		fmt.Fprintf(cmd.ErrOrStderr(), "note: usage records waiting in %s could not be read: %v\n", dir, err)
	case pending > 0:
		fmt.Fprintf(cmd.ErrOrStderr(), "note: %d usage records in %s are not in the ledger yet and are not counted here; the gateway stores them once its ledger takes writes again, or when it next starts\n", pending, dir)
	}
}
