package admin

import (
	"context"
	"errors"
	"maps"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tollgate-dev/tollgate/pkg/internal/errtext"
	"github.com/tollgate-dev/tollgate/pkg/ledger"
	pb "github.com/tollgate-dev/tollgate/proto/tollgate/v1"
)

// DefaultUsageWindow is how far back GetUsage looks when no start is given.
const DefaultUsageWindow = 24 * time.Hour

var groupBy = map[pb.GroupBy]string{
	pb.GroupBy_GROUP_BY_UNSPECIFIED: "",
	pb.GroupBy_GROUP_BY_HOUR:        "hour",
	pb.GroupBy_GROUP_BY_DAY:         "day",
	pb.GroupBy_GROUP_BY_MODEL:       "model",
}

// GetUsage implements pb.UsageServiceServer. The ledger sums hourly
// roll-ups, so since and until select whole hours: a bound inside an hour
// takes in all of it.
func (s *Service) GetUsage(ctx context.Context, req *pb.GetUsageRequest) (*pb.GetUsageResponse, error) {
	by, ok := groupBy[req.GetBy()]
	if !ok {
		return nil, invalid("group by %v: want hour, day, model or nothing", req.GetBy())
	}
	q := ledger.Query{Account: req.GetAccount(), Project: req.GetProject(), Model: req.GetModel(), By: by}
	q.Since = s.now().Add(-DefaultUsageWindow)
	if req.GetSince() != nil {
		if err := req.GetSince().CheckValid(); err != nil {
			return nil, invalid("since: %v", err)
		}
		q.Since = req.GetSince().AsTime()
	}
	if req.GetUntil() != nil {
		if err := req.GetUntil().CheckValid(); err != nil {
			return nil, invalid("until: %v", err)
		}
		q.Until = req.GetUntil().AsTime()
		if !q.Until.After(q.Since) {
			return nil, invalid("until %s is not after since %s", q.Until.Format(time.RFC3339), q.Since.Format(time.RFC3339))
		}
	}
	// A misspelt account or project is an error to report, not zero usage.
	if q.Account != "" {
		if _, err := s.cfg.Store.GetAccount(ctx, q.Account); err != nil {
			return nil, s.storeError("get usage", err)
		}
	}
	if q.Project != "" {
		p, err := s.cfg.Store.GetProject(ctx, q.Project)
		switch {
		case q.Account != "" && (errors.Is(err, ledger.ErrNotFound) || err == nil && p.Account != q.Account):
			// Another account's project is answered as one that does not
			// exist, in the same words: a gateway token, held to its own
			// account, must not learn which project names other accounts
			// use.
			return nil, status.Errorf(codes.NotFound, "project %s: not found in account %s", errtext.Quote(q.Project), errtext.Quote(q.Account))
		case err != nil:
			return nil, s.storeError("get usage", err)
		}
	}
	buckets, err := s.cfg.Store.Summarize(ctx, q)
	if err != nil {
		return nil, s.storeError("get usage", err)
	}
	out := &pb.GetUsageResponse{Buckets: make([]*pb.UsageBucket, 0, len(buckets))}
	var total ledger.Bucket
	for _, b := range buckets {
		out.Buckets = append(out.Buckets, bucketProto(b))
		total.Input += b.Input
		total.CachedInput += b.CachedInput
		total.CacheWrite += b.CacheWrite
		total.Output += b.Output
		total.Reasoning += b.Reasoning
		total.Requests += b.Requests
		total.Credits += b.Credits
		for reason, n := range b.Rejections {
			if total.Rejections == nil {
				total.Rejections = map[string]int64{}
			}
			total.Rejections[reason] += n
		}
	}
	out.Total = bucketProto(total)
	return out, nil
}

func bucketProto(b ledger.Bucket) *pb.UsageBucket {
	out := &pb.UsageBucket{
		Model: b.Model,
		Tokens: &pb.UsageTokens{
			Input: b.Input, CachedInput: b.CachedInput, CacheWrite: b.CacheWrite,
			Output: b.Output, Reasoning: b.Reasoning,
		},
		Requests:   b.Requests,
		Credits:    credits(b.Credits),
		Rejections: maps.Clone(b.Rejections),
	}
	if !b.Start.IsZero() {
		out.Start = timestamppb.New(b.Start)
	}
	return out
}
