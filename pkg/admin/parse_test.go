package admin_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/pkg/admin"
	pb "github.com/tollgate-dev/tollgate/proto/tollgate/v1"
)

func TestParseCredits(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"12.5", 12_500_000, true},
		{"-3", -3_000_000, true},
		{"+2", 2_000_000, true},
		{"0.000001", 1, true},
		{"-0.000001", -1, true},
		{" 7 ", 7_000_000, true},
		{".5", 500_000, true},
		{"100.", 100_000_000, true},
		{"999999999999.999999", 999_999_999_999_999_999, true},
		{"1.0000001", 0, false},
		{"", 0, false},
		{"-", 0, false},
		{"1e3", 0, false},
		{"--1", 0, false},
		{"-+5", 0, false},
		{"+-5", 0, false},
		{"++5", 0, false},
		{"1,5", 0, false},
		{"0x10", 0, false},
		{"1000000000000", 0, false},
		{"NaN", 0, false},
	} {
		got, err := admin.ParseCredits(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseCredits(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "6 decimal places") {
			t.Errorf("ParseCredits(%q) error %q does not say what is wanted", tc.in, err)
		}
	}
	for micro, want := range map[int64]string{12_500_000: "12.50", -1: "-0.000001", 0: "0.00", 1_751_000: "1.751"} {
		if got := admin.FormatCredits(micro); got != want {
			t.Errorf("FormatCredits(%d) = %q, want %q", micro, got, want)
		}
	}
}

// FuzzParseCredits: whatever ParseCredits accepts, FormatCredits writes
// back to the same amount, and the sign is the input's.
func FuzzParseCredits(f *testing.F) {
	for _, s := range []string{"12.5", "-3", "0.000001", "+1", ".5", "1.0000001", "999999999999.999999", "-0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		micro, err := admin.ParseCredits(s)
		if err != nil {
			return
		}
		back, err := admin.ParseCredits(admin.FormatCredits(micro))
		if err != nil || back != micro {
			t.Fatalf("%q → %d → %q → %d, %v", s, micro, admin.FormatCredits(micro), back, err)
		}
		if strings.HasPrefix(strings.TrimSpace(s), "-") && micro > 0 {
			t.Fatalf("%q parsed as positive %d", s, micro)
		}
	})
}

func TestParseUsageQuery(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 30, 0, 0, time.UTC)
	for _, tc := range []struct {
		query string
		want  *pb.GetUsageRequest // nil: refused
		since time.Time
		until time.Time
	}{
		{"account=a&project=p&model=m&since=24h&by=hour", &pb.GetUsageRequest{Account: "a", Project: "p", Model: "m", By: pb.GroupBy_GROUP_BY_HOUR}, now.Add(-24 * time.Hour), time.Time{}},
		{"since=90m&until=30m&by=day", &pb.GetUsageRequest{By: pb.GroupBy_GROUP_BY_DAY}, now.Add(-90 * time.Minute), now.Add(-30 * time.Minute)},
		{"since=2026-02-01T00:00:00Z&by=model", &pb.GetUsageRequest{By: pb.GroupBy_GROUP_BY_MODEL}, time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC), time.Time{}},
		{"since=2026-02-01T01:00:00%2B01:00", &pb.GetUsageRequest{}, time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC), time.Time{}},
		{"", &pb.GetUsageRequest{}, time.Time{}, time.Time{}},
		{"since=-1h", nil, time.Time{}, time.Time{}},
		{"since=0s", nil, time.Time{}, time.Time{}},
		{"since=yesterday", nil, time.Time{}, time.Time{}},
		{"by=week", nil, time.Time{}, time.Time{}},
		{"by=HOUR", nil, time.Time{}, time.Time{}},
		{"acount=a", nil, time.Time{}, time.Time{}},
		{"account=a&account=b", nil, time.Time{}, time.Time{}},
	} {
		q, err := url.ParseQuery(tc.query)
		if err != nil {
			t.Fatal(err)
		}
		got, err := admin.ParseUsageQuery(q, now)
		if tc.want == nil {
			if err == nil {
				t.Errorf("%q: accepted as %v", tc.query, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.query, err)
			continue
		}
		if got.GetAccount() != tc.want.GetAccount() || got.GetProject() != tc.want.GetProject() || got.GetModel() != tc.want.GetModel() || got.GetBy() != tc.want.GetBy() {
			t.Errorf("%q = %v, want %v", tc.query, got, tc.want)
		}
		for _, b := range []struct {
			name string
			got  interface{ AsTime() time.Time }
			set  bool
			want time.Time
		}{{"since", got.GetSince(), got.GetSince() != nil, tc.since}, {"until", got.GetUntil(), got.GetUntil() != nil, tc.until}} {
			if b.set != !b.want.IsZero() || (b.set && !b.got.AsTime().Equal(b.want)) {
				t.Errorf("%q: %s = %v (set %v), want %v", tc.query, b.name, b.got, b.set, b.want)
			}
		}
	}
}

// FuzzParseUsageQuery: any query string either is refused or gives a
// request whose times are valid timestamps and whose grouping is known.
func FuzzParseUsageQuery(f *testing.F) {
	for _, s := range []string{"account=a&since=24h&by=hour", "since=2026-02-01T00:00:00Z&until=1h", "by=model", "since=-5m", "x=1", "since=9999999h"} {
		f.Add(s)
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		req, err := admin.ParseUsageQuery(q, now)
		if err != nil {
			return
		}
		if ts := req.GetSince(); ts != nil && ts.CheckValid() != nil {
			t.Fatalf("%q: invalid since %v", raw, ts)
		}
		if ts := req.GetUntil(); ts != nil && ts.CheckValid() != nil {
			t.Fatalf("%q: invalid until %v", raw, ts)
		}
		if _, ok := pb.GroupBy_name[int32(req.GetBy())]; !ok {
			t.Fatalf("%q: unknown grouping %v", raw, req.GetBy())
		}
	})
}
