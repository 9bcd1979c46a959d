package ledger

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// validate reports whether rec can be stored: it needs a request id (the
// idempotency key), a time that Unix nanoseconds can represent (years 1678
// to 2262; the zero time.Time is not one, and is always a bug upstream),
// and counts in range, so that no sum in a roll-up or a balance can
// overflow. A record that passes is stored by both backends alike, so a
// Writer never spools a record the store would refuse forever.
func validate(rec usage.Record) error {
	if rec.RequestID == "" {
		return errors.New("usage record without a request id")
	}
	if rec.Time.Before(time.Unix(0, math.MinInt64)) || rec.Time.After(time.Unix(0, math.MaxInt64)) {
		return fmt.Errorf("usage record %s: time %v out of range", rec.RequestID, rec.Time)
	}
	for _, n := range [...]int64{rec.Input, rec.CachedInput, rec.CacheWrite, rec.Output, rec.Reasoning} {
		if n < 0 || n > usage.MaxCount {
			return fmt.Errorf("usage record %s: token count %d out of range [0, %d]", rec.RequestID, n, usage.MaxCount)
		}
	}
	if rec.Credits < 0 || rec.Credits > MaxCredits {
		return fmt.Errorf("usage record %s: credits %d out of range [0, %d]", rec.RequestID, rec.Credits, MaxCredits)
	}
	return nil
}

// clean makes rec's strings storable by both backends: PostgreSQL text
// holds neither invalid UTF-8 nor NUL, so those become U+FFFD. Ids and
// names the gateway produces are never changed by this; a model name a
// client sent might be.
func clean(rec usage.Record) usage.Record {
	for _, s := range []*string{&rec.RequestID, &rec.Account, &rec.Project, &rec.Provider, &rec.Model, &rec.Operation, &rec.Reason} {
		*s = cleanString(*s)
	}
	rec.Status = usage.Status(cleanString(string(rec.Status)))
	return rec
}

func cleanString(s string) string {
	if utf8.ValidString(s) && !strings.ContainsRune(s, 0) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// InsertUsage stores recs in one transaction: all of them or none. A record
// whose request id is already stored, or repeated in recs, is skipped (the
// first write of an id wins), so a retried write never duplicates a
// request. For each record it does store, the same transaction debits its
// account's balance by its credits (if the account exists) and adds it to
// the hourly roll-up of its account, project and model.
func (d *DB) InsertUsage(ctx context.Context, recs ...usage.Record) error {
	if len(recs) == 0 {
		return nil
	}
	batch := make([]usage.Record, 0, len(recs))
	seen := make(map[string]struct{}, len(recs))
	for _, rec := range recs {
		if err := validate(rec); err != nil {
			return fmt.Errorf("ledger: insert: %w", err)
		}
		rec = clean(rec)
		if _, dup := seen[rec.RequestID]; dup {
			continue
		}
		seen[rec.RequestID] = struct{}{}
		batch = append(batch, rec)
	}
	// Every transaction takes its row locks in one order (usage ids, then
	// roll-up keys, then accounts), so concurrent writers on PostgreSQL
	// wait for each other instead of deadlocking.
	slices.SortFunc(batch, func(a, b usage.Record) int { return strings.Compare(a.RequestID, b.RequestID) })
	err := d.inTx(ctx, func(c conn) error {
		ids, err := d.b.insertNew(ctx, c, batch)
		if err != nil {
			return err
		}
		if len(ids) == 0 {
			return nil
		}
		inserted := make(map[string]struct{}, len(ids))
		for _, id := range ids {
			inserted[id] = struct{}{}
		}
		fresh := batch[:0:0]
		for _, rec := range batch {
			if _, ok := inserted[rec.RequestID]; ok {
				fresh = append(fresh, rec)
			}
		}
		return addTotals(ctx, c, fresh)
	})
	if err != nil {
		return fmt.Errorf("ledger: insert %d records from %s: %w", len(batch), batch[0].RequestID, err)
	}
	return nil
}

// hourKey is one roll-up row.
type hourKey struct {
	account, project, model string
	hour                    int64 // Unix seconds at the start of the hour (UTC)
}

func (k hourKey) compare(o hourKey) int {
	return cmp.Or(strings.Compare(k.account, o.account), strings.Compare(k.project, o.project),
		strings.Compare(k.model, o.model), cmp.Compare(k.hour, o.hour))
}

type rejectionKey struct {
	hourKey
	reason string
}

type hourTotals struct {
	usage.Tokens
	requests, credits int64
}

// hourOf is the start of t's hour in Unix seconds, rounding down (also
// before 1970).
func hourOf(t time.Time) int64 {
	s := t.Unix()
	return s - ((s%3600)+3600)%3600
}

// noReason is the rejection reason of a rejected record that has none.
const noReason = "unspecified"

// Statement sizes: rows × columns stays far below SQLite's 32,766 and
// PostgreSQL's 65,535 parameters.
const totalsPerInsert = 256

// addTotals adds freshly inserted records to the hourly roll-ups and debits
// their credits from their accounts.
func addTotals(ctx context.Context, c conn, recs []usage.Record) error {
	totals := map[hourKey]*hourTotals{}
	rejections := map[rejectionKey]int64{}
	debits := map[string]int64{}
	for _, r := range recs {
		k := hourKey{r.Account, r.Project, r.Model, hourOf(r.Time)}
		t := totals[k]
		if t == nil {
			t = &hourTotals{}
			totals[k] = t
		}
		t.Input += r.Input
		t.CachedInput += r.CachedInput
		t.CacheWrite += r.CacheWrite
		t.Output += r.Output
		t.Reasoning += r.Reasoning
		t.requests++
		t.credits += r.Credits
		if r.Status == usage.StatusRejected {
			reason := cmp.Or(r.Reason, noReason)
			rejections[rejectionKey{k, reason}]++
		}
		if r.Credits != 0 {
			debits[r.Account] += r.Credits
		}
	}

	keys := make([]hourKey, 0, len(totals))
	for k := range totals {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, hourKey.compare)
	for chunk := range slices.Chunk(keys, totalsPerInsert) {
		args := make([]any, 0, len(chunk)*11)
		for _, k := range chunk {
			t := totals[k]
			args = append(args, k.account, k.project, k.model, k.hour,
				t.requests, t.Input, t.CachedInput, t.CacheWrite, t.Output, t.Reasoning, t.credits)
		}
		if _, err := c.exec(ctx, `INSERT INTO usage_hourly (account, project, model, hour,
				requests, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, credits)
			VALUES `+placeholders(len(chunk), 11)+`
			ON CONFLICT (account, project, model, hour) DO UPDATE SET
				requests = usage_hourly.requests + excluded.requests,
				input_tokens = usage_hourly.input_tokens + excluded.input_tokens,
				cached_input_tokens = usage_hourly.cached_input_tokens + excluded.cached_input_tokens,
				cache_write_tokens = usage_hourly.cache_write_tokens + excluded.cache_write_tokens,
				output_tokens = usage_hourly.output_tokens + excluded.output_tokens,
				reasoning_tokens = usage_hourly.reasoning_tokens + excluded.reasoning_tokens,
				credits = usage_hourly.credits + excluded.credits`, args...); err != nil {
			return fmt.Errorf("roll-ups: %w", err)
		}
	}

	rkeys := make([]rejectionKey, 0, len(rejections))
	for k := range rejections {
		rkeys = append(rkeys, k)
	}
	slices.SortFunc(rkeys, func(a, b rejectionKey) int {
		return cmp.Or(a.hourKey.compare(b.hourKey), strings.Compare(a.reason, b.reason))
	})
	for chunk := range slices.Chunk(rkeys, totalsPerInsert) {
		args := make([]any, 0, len(chunk)*6)
		for _, k := range chunk {
			args = append(args, k.account, k.project, k.model, k.hour, k.reason, rejections[k])
		}
		if _, err := c.exec(ctx, `INSERT INTO usage_hourly_rejections (account, project, model, hour, reason, rejections)
			VALUES `+placeholders(len(chunk), 6)+`
			ON CONFLICT (account, project, model, hour, reason) DO UPDATE SET
				rejections = usage_hourly_rejections.rejections + excluded.rejections`, args...); err != nil {
			return fmt.Errorf("rejection roll-ups: %w", err)
		}
	}

	accounts := make([]string, 0, len(debits))
	for a := range debits {
		accounts = append(accounts, a)
	}
	slices.Sort(accounts)
	for _, a := range accounts {
		if _, err := c.exec(ctx, `UPDATE accounts SET balance = balance - ? WHERE id = ?`, debits[a], a); err != nil {
			return fmt.Errorf("debiting account %q: %w", a, err)
		}
	}
	return nil
}

// placeholders is "(?,?,…),(?,?,…)…": rows groups of cols.
func placeholders(rows, cols int) string {
	row := "(" + strings.TrimSuffix(strings.Repeat("?,", cols), ",") + ")"
	return strings.TrimSuffix(strings.Repeat(row+",", rows), ",")
}

// usageColumns are the usage table's columns, in the order insertNew and
// scanRecord use.
const usageColumns = `request_id, time_ns, account, project, provider, model, operation, status,
	http_status, reason, stream, input_tokens, cached_input_tokens, cache_write_tokens,
	output_tokens, reasoning_tokens, estimated, latency_ns, latency_ms, credits, ttft_ns`

const usageFields = 21

// usageColumnNames is usageColumns as a list.
var usageColumnNames = strings.Fields(strings.ReplaceAll(usageColumns, ",", " "))

// Filter selects usage records. Zero fields select everything.
type Filter struct {
	Account, Project, Provider, Model string    // exact matches
	Since                             time.Time // inclusive
	Until                             time.Time // exclusive
	Limit                             int       // at most this many records, the earliest first
}

// ListUsage returns the records f selects, ordered by time then request id.
// Times come back in UTC, to the nanosecond, without a monotonic reading.
func (d *DB) ListUsage(ctx context.Context, f Filter) ([]usage.Record, error) {
	var (
		where []string
		args  []any
	)
	for _, c := range []struct{ column, value string }{
		{"account", f.Account}, {"project", f.Project}, {"provider", f.Provider}, {"model", f.Model},
	} {
		if c.value != "" {
			where = append(where, c.column+" = ?")
			args = append(args, c.value)
		}
	}
	if !f.Since.IsZero() {
		where = append(where, "time_ns >= ?")
		args = append(args, clampUnixNano(f.Since))
	}
	if !f.Until.IsZero() {
		where = append(where, "time_ns < ?")
		args = append(args, clampUnixNano(f.Until))
	}
	query := `SELECT ` + usageColumns + ` FROM usage`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY time_ns, request_id"
	if f.Limit > 0 {
		query += " LIMIT ?"
		args = append(args, int64(f.Limit))
	}
	var recs []usage.Record
	err := d.b.query(ctx, query, args, func(scan func(...any) error) error {
		var (
			r                         usage.Record
			timeNS, latencyNS, ttftNS int64
			status                    string
		)
		if err := scan(
			&r.RequestID, &timeNS, &r.Account, &r.Project, &r.Provider, &r.Model, &r.Operation, &status,
			&r.HTTPStatus, &r.Reason, &r.Stream, &r.Input, &r.CachedInput, &r.CacheWrite,
			&r.Output, &r.Reasoning, &r.Estimated, &latencyNS, &r.LatencyMS, &r.Credits, &ttftNS,
		); err != nil {
			return err
		}
		r.Time = time.Unix(0, timeNS).UTC()
		r.Status = usage.Status(status)
		r.Latency = time.Duration(latencyNS)
		r.TTFT = time.Duration(ttftNS)
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: list usage: %w", err)
	}
	return recs, nil
}

// usageArgs appends r's values in usageColumns order.
func usageArgs(args []any, r usage.Record) []any {
	return append(args,
		r.RequestID, r.Time.UnixNano(), r.Account, r.Project, r.Provider, r.Model, r.Operation, string(r.Status),
		int64(r.HTTPStatus), r.Reason, r.Stream, r.Input, r.CachedInput, r.CacheWrite,
		r.Output, r.Reasoning, r.Estimated, int64(r.Latency), r.LatencyMS, r.Credits, int64(r.TTFT))
}

// clampUnixNano is t in Unix nanoseconds, clamped to what int64 holds, so
// that a filter bound far in the past or future still means "unbounded".
func clampUnixNano(t time.Time) int64 {
	switch {
	case t.Before(time.Unix(0, math.MinInt64)):
		return math.MinInt64
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return t.UnixNano()
}
