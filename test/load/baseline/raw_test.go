package main

import (
	"fmt"
	"strings"
	"testing"
)

func chunked(sizes []int, trailer string) string {
	var b strings.Builder
	for i, n := range sizes {
		if i%2 == 1 {
			fmt.Fprintf(&b, "%X;ext=1\r\n", n)
		} else {
			fmt.Fprintf(&b, "%x\r\n", n)
		}
		// Data that looks like the last chunk must not end the body.
		b.WriteString(strings.Repeat("0\r\n\r\n", n)[:n])
		b.WriteString("\r\n")
	}
	b.WriteString("0\r\n" + trailer + "\r\n")
	return b.String()
}

// scanSplit feeds body in pieces of step bytes and returns how many bytes
// were consumed when the framer reported the end (-1: never).
func scanSplit(t testing.TB, body string, step int) int {
	var f chunkFramer
	for i := 0; i < len(body); i += step {
		end := min(i+step, len(body))
		if err := f.scan([]byte(body[i:end])); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if f.done {
			return end
		}
	}
	return -1
}

func TestChunkFramer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sizes   []int
		trailer string
	}{
		{"empty", nil, ""},
		{"one", []int{5}, ""},
		{"sse events", []int{120, 98, 1, 4096, 17}, ""},
		{"trailer", []int{3}, "X-Usage: 1\r\n"},
	} {
		body := chunked(tc.sizes, tc.trailer)
		for step := 1; step <= len(body); step++ {
			got := scanSplit(t, body, step)
			if got != len(body) {
				t.Fatalf("%s, pieces of %d: end at %d, want %d", tc.name, step, got, len(body))
			}
		}
	}
}

func FuzzChunkFramer(f *testing.F) {
	f.Add([]byte{5, 0, 200}, uint8(7))
	f.Fuzz(func(t *testing.T, sizes []byte, step uint8) {
		ns := make([]int, 0, len(sizes))
		for _, s := range sizes {
			if s > 0 {
				ns = append(ns, int(s)*3)
			}
		}
		body := chunked(ns, "")
		if got := scanSplit(t, body, int(step)+1); got != len(body) {
			t.Fatalf("end at %d of %d", got, len(body))
		}
	})
}
