package ledger

import (
	"fmt"
	"maps"
	"reflect"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// usageFixture is a day of varied records of account "acme": two models,
// three hours across a UTC midnight, two projects, rejections.
func usageFixture() []usage.Record {
	t0 := time.Date(2026, 11, 26, 22, 15, 0, 0, time.UTC)
	var recs []usage.Record
	for i := range 60 {
		r := usage.Record{
			RequestID: fmt.Sprintf("req-%03d", i),
			Time:      t0.Add(time.Duration(i) * 3 * time.Minute), // 22:15 .. 01:12
			Account:   "acme", Project: []string{"shop", "blog"}[i%2], Provider: "openai",
			Model: []string{"gpt-4o", "gpt-4o-mini"}[i%3/2], Operation: "chat", Status: usage.StatusOK, HTTPStatus: 200,
			Tokens:  usage.Tokens{Input: int64(100 + i), CachedInput: int64(i % 7), CacheWrite: int64(i % 5), Output: int64(10 * i), Reasoning: int64(i % 4)},
			Credits: int64(1000 + 37*i), TTFT: time.Duration(i) * time.Millisecond,
		}
		switch i % 10 {
		case 3:
			r.Status, r.HTTPStatus, r.Reason, r.Tokens, r.Credits = usage.StatusRejected, 429, "tpm_limit", usage.Tokens{}, 0
		case 7:
			r.Status, r.HTTPStatus, r.Tokens, r.Credits = usage.StatusRejected, 402, usage.Tokens{}, 0
		}
		recs = append(recs, r)
	}
	return recs
}

// sumOf adds up recs the plain way, as a bucket.
func sumOf(recs []usage.Record, keep func(usage.Record) bool) Bucket {
	var b Bucket
	for _, r := range recs {
		if !keep(r) {
			continue
		}
		b.Input += r.Input
		b.CachedInput += r.CachedInput
		b.CacheWrite += r.CacheWrite
		b.Output += r.Output
		b.Reasoning += r.Reasoning
		b.Requests++
		b.Credits += r.Credits
		if r.Status == usage.StatusRejected {
			if b.Rejections == nil {
				b.Rejections = map[string]int64{}
			}
			reason := r.Reason
			if reason == "" {
				reason = "unspecified"
			}
			b.Rejections[reason]++
		}
	}
	return b
}

func all(usage.Record) bool { return true }

func testUsageReplay(t *testing.T, s *DB, _ backendEnv) {
	ctx := t.Context()
	const initial = 10_000_000
	if _, err := s.CreateAccount(ctx, "acme", catalog.PlanPro, initial); err != nil {
		t.Fatal(err)
	}
	recs := usageFixture()
	ghost := usage.Record{RequestID: "ghost-1", Time: recs[0].Time, Account: "ghost", Model: "gpt-4o", Credits: 5, Status: usage.StatusOK}
	if err := s.InsertUsage(ctx, append(recs[:40:40], ghost)...); err != nil {
		t.Fatal(err)
	}
	// Replays: the same records again, alone, overlapping new ones, and
	// repeated within one batch; a replayed record that differs is still
	// the first write's.
	changed := recs[5]
	changed.Credits, changed.Output = 999_999, 999_999
	for _, batch := range [][]usage.Record{recs[:40], recs[10:20], append(recs[30:], recs[35:]...), {changed}, recs} {
		if err := s.InsertUsage(ctx, batch...); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.ListUsage(ctx, Filter{Account: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(recs) {
		t.Fatalf("%d records stored, want %d", len(got), len(recs))
	}
	for i := range recs {
		want := recs[i]
		if !reflect.DeepEqual(got[i], want) {
			t.Errorf("record %d:\n got %+v\nwant %+v", i, got[i], want)
		}
	}
	want := sumOf(recs, all)
	a, err := s.GetAccount(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if a.Balance != initial-want.Credits {
		t.Errorf("balance %d, want %d - %d debited once", a.Balance, initial, want.Credits)
	}
	total, err := s.Summarize(ctx, Query{Account: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if len(total) != 1 || !reflect.DeepEqual(total[0], want) {
		t.Errorf("Summarize(all) = %+v\nwant [%+v]", total, want)
	}
	if ghosts, err := s.Summarize(ctx, Query{Account: "ghost"}); err != nil || len(ghosts) != 1 || ghosts[0].Credits != 5 {
		t.Errorf("an account the ledger does not know still has its usage rolled up: %+v, %v", ghosts, err)
	}
}

func testSummarize(t *testing.T, s *DB, _ backendEnv) {
	ctx := t.Context()
	recs := usageFixture()
	if err := s.InsertUsage(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	hour := func(h int) time.Time { return time.Date(2026, 11, 26, h, 0, 0, 0, time.UTC) }
	in := func(from, to time.Time) func(usage.Record) bool {
		return func(r usage.Record) bool { return !r.Time.Before(from) && r.Time.Before(to) }
	}
	at := func(b Bucket, start time.Time) Bucket { b.Start = start; return b }
	named := func(b Bucket, model string) Bucket { b.Model = model; return b }
	model := func(m string) func(usage.Record) bool { return func(r usage.Record) bool { return r.Model == m } }
	and := func(f, g func(usage.Record) bool) func(usage.Record) bool {
		return func(r usage.Record) bool { return f(r) && g(r) }
	}
	tests := []struct {
		name string
		q    Query
		want []Bucket
	}{
		{"by hour", Query{Account: "acme", By: "hour"}, []Bucket{
			at(sumOf(recs, in(hour(22), hour(23))), hour(22)),
			at(sumOf(recs, in(hour(23), hour(24))), hour(23)),
			at(sumOf(recs, in(hour(24), hour(25))), hour(24)),
			at(sumOf(recs, in(hour(25), hour(26))), hour(25)),
		}},
		{"by day, UTC", Query{Account: "acme", By: "day"}, []Bucket{
			at(sumOf(recs, in(hour(0), hour(24))), hour(0)),
			at(sumOf(recs, in(hour(24), hour(48))), hour(24)),
		}},
		{"by model", Query{Account: "acme", By: "model"}, []Bucket{
			named(sumOf(recs, model("gpt-4o")), "gpt-4o"),
			named(sumOf(recs, model("gpt-4o-mini")), "gpt-4o-mini"),
		}},
		{"one project and model", Query{Account: "acme", Project: "shop", Model: "gpt-4o"}, []Bucket{
			sumOf(recs, and(model("gpt-4o"), func(r usage.Record) bool { return r.Project == "shop" })),
		}},
		{"since inside an hour takes the whole hour", Query{Account: "acme", Since: hour(23).Add(30 * time.Minute), Until: hour(24).Add(time.Nanosecond)}, []Bucket{
			sumOf(recs, in(hour(23), hour(25))),
		}},
		{"until on the hour excludes it", Query{Account: "acme", Until: hour(23), By: "hour"}, []Bucket{
			at(sumOf(recs, in(hour(22), hour(23))), hour(22)),
		}},
		{"no usage", Query{Account: "nobody"}, nil},
		{"all accounts", Query{}, []Bucket{sumOf(recs, all)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Summarize(ctx, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Summarize(%+v)\n got %+v\nwant %+v", tt.q, got, tt.want)
			}
		})
	}
	if _, err := s.Summarize(ctx, Query{By: "week"}); err == nil {
		t.Error("Summarize by week accepted")
	}
	// The rejection reasons the fixture has, as a check on the fixture.
	if got := sumOf(recs, all).Rejections; !maps.Equal(got, map[string]int64{"tpm_limit": 6, "unspecified": 6}) {
		t.Errorf("fixture rejections %v", got)
	}
}
