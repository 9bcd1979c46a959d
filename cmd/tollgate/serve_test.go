package main

import (
	"strings"
	"testing"
	"time"
)

func TestConfigDuration(t *testing.T) {
	for _, tc := range []struct {
		value  string
		zeroOK bool
		want   time.Duration
		err    string
	}{
		{"", false, 10 * time.Second, ""},
		{"250ms", false, 250 * time.Millisecond, ""},
		{"0", true, 0, ""},
		{"0", false, 0, "want a positive duration"},
		{"-1s", true, 0, "or 0"},
		{"ten seconds", false, 0, `"ten seconds"`},
	} {
		got, err := configDuration("signing_keys_poll", tc.value, 10*time.Second, tc.zeroOK)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("%q: %v, %v; want %v", tc.value, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "signing_keys_poll")):
			t.Errorf("%q: error %v, want one naming the key and saying %q", tc.value, err, tc.err)
		}
	}
}
