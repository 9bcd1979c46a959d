package admin

import (
	"fmt"
	"strings"

	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/pkg/internal/errtext"
	pb "github.com/tollgate-dev/tollgate/proto/tollgate/v1"
)

// ParseCredits reads a decimal number of credits with at most six decimal
// places, optionally signed ("12.5", "-3", "0.000001"), as micro-credits,
// exactly.
func ParseCredits(s string) (int64, error) {
	t := strings.TrimSpace(s)
	// One sign at most: "-+5" is a typo, not -5.
	neg := false
	switch {
	case strings.HasPrefix(t, "-"):
		neg, t = true, t[1:]
	case strings.HasPrefix(t, "+"):
		t = t[1:]
	}
	// Credits are written like prices: a decimal count of whole units
	// held as millionths.
	micro, err := catalog.ParsePrice(t)
	if err != nil {
		return 0, fmt.Errorf("credits %s: want a decimal number of credits with at most 6 decimal places, such as 12.5 or -3", errtext.Quote(s))
	}
	if neg {
		micro = -micro
	}
	return micro, nil
}

// FormatCredits renders micro-credits as a decimal number of credits that
// ParseCredits reads back exactly ("12.50", "-0.000001").
func FormatCredits(micro int64) string { return catalog.FormatPrice(micro) }

func credits(micro int64) *pb.Credits {
	return &pb.Credits{Micro: micro, Decimal: FormatCredits(micro)}
}
