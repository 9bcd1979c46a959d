package ledger

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// Query selects hourly roll-ups to summarize. Empty strings select
// everything; zero times are unbounded.
type Query struct {
	Account, Project, Model string
	// Since and Until select the hours that overlap [Since, Until): roll-ups
	// are hourly, so a bound inside an hour takes in the whole hour.
	Since, Until time.Time
	// By is how buckets are formed: "hour", "day" (UTC days), "model", or
	// "" for one bucket of everything.
	By string
}

// Bucket is the usage of one time bucket or one model.
type Bucket struct {
	Start        time.Time `json:"start,omitzero"` // By "hour" or "day": the bucket's first instant, UTC
	Model        string    `json:"model,omitempty"`
	usage.Tokens           // tokens by kind
	// Requests counts every request, rejected ones included.
	Requests int64 `json:"requests"`
	Credits  int64 `json:"credits_micro"`
	// Rejections counts the requests the gateway refused, by reason.
	Rejections map[string]int64 `json:"rejections,omitempty"`
}

// bucketKeys are the SQL expressions of a bucket's start and model for each
// Query.By, and the one of them it groups on (constants are not grouped
// on: PostgreSQL refuses that).
var bucketKeys = map[string]struct{ hour, model, group string }{
	"":      {"0", "''", ""},
	"hour":  {"hour", "''", "h"},
	"day":   {"hour - ((hour % 86400) + 86400) % 86400", "''", "h"},
	"model": {"0", "model", "m"},
}

// Summarize returns the buckets q selects in order (of time, or of model
// name), leaving out buckets without requests.
func (d *DB) Summarize(ctx context.Context, q Query) ([]Bucket, error) {
	key, ok := bucketKeys[q.By]
	if !ok {
		return nil, invalidf("summary by %q: want hour, day, model or nothing", q.By)
	}
	var (
		where []string
		args  []any
	)
	for _, c := range []struct{ column, value string }{{"account", q.Account}, {"project", q.Project}, {"model", q.Model}} {
		if c.value != "" {
			where = append(where, c.column+" = ?")
			args = append(args, c.value)
		}
	}
	if !q.Since.IsZero() {
		where = append(where, "hour >= ?")
		args = append(args, hourOf(q.Since))
	}
	if !q.Until.IsZero() {
		where = append(where, "hour < ?")
		args = append(args, q.Until.Unix()+boolInt(q.Until.Nanosecond() > 0))
	}
	filter := ""
	if len(where) > 0 {
		filter = " WHERE " + strings.Join(where, " AND ")
	}
	group, rejectionGroup := "", " GROUP BY reason"
	if key.group != "" {
		group = " GROUP BY " + key.group + " ORDER BY " + key.group
		rejectionGroup = " GROUP BY " + key.group + ", reason"
	}
	sum := func(col string) string { return "CAST(coalesce(sum(" + col + "), 0) AS BIGINT)" }

	var buckets []Bucket
	index := map[bucketID]int{}
	err := d.b.query(ctx, `SELECT `+key.hour+` AS h, `+key.model+` AS m, `+
		strings.Join([]string{sum("requests"), sum("input_tokens"), sum("cached_input_tokens"), sum("cache_write_tokens"),
			sum("output_tokens"), sum("reasoning_tokens"), sum("credits")}, ", ")+
		` FROM usage_hourly`+filter+group, args, func(scan func(...any) error) error {
		var (
			id bucketID
			b  Bucket
		)
		if err := scan(&id.hour, &id.model, &b.Requests, &b.Input, &b.CachedInput, &b.CacheWrite, &b.Output, &b.Reasoning, &b.Credits); err != nil {
			return err
		}
		if b.Requests == 0 {
			return nil // the one row of an empty ungrouped sum
		}
		if q.By == "hour" || q.By == "day" {
			b.Start = time.Unix(id.hour, 0).UTC()
		}
		b.Model = id.model
		index[id] = len(buckets)
		buckets = append(buckets, b)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: summarize: %w", err)
	}
	err = d.b.query(ctx, `SELECT `+key.hour+` AS h, `+key.model+` AS m, reason, `+sum("rejections")+
		` FROM usage_hourly_rejections`+filter+rejectionGroup, args, func(scan func(...any) error) error {
		var (
			id     bucketID
			reason string
			n      int64
		)
		if err := scan(&id.hour, &id.model, &reason, &n); err != nil {
			return err
		}
		// Each rejection was also counted as a request, in the same
		// transaction, so its bucket exists.
		if i, ok := index[id]; ok {
			b := &buckets[i]
			if b.Rejections == nil {
				b.Rejections = map[string]int64{}
			}
			b.Rejections[reason] += n
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: summarize rejections: %w", err)
	}
	return buckets, nil
}

type bucketID struct {
	hour  int64
	model string
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
