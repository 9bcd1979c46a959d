package kube

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestWaitHTTPWantsTheBody: a 200 from whatever holds the port is not the
// awaited server's answer; waitHTTP keeps waiting and reports what it got
// once the awaited process has exited, and accepts the right body.
func TestWaitHTTPWantsTheBody(t *testing.T) {
	for _, c := range []struct {
		name, body string
		ready      bool
	}{
		{"the server's own answer", `{"health":"true","reason":""}`, true},
		{"another server on the port", "hello from someone else", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, c.body) }))
			defer srv.Close()
			p := &proc{name: "etcd", exited: make(chan struct{})}
			// The awaited process fails to bind the taken port and exits.
			time.AfterFunc(500*time.Millisecond, func() { close(p.exited) })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := waitHTTP(ctx, p, srv.Client(), srv.URL+"/health", nil, `"health":"true"`)
			if c.ready {
				if err != nil {
					t.Fatalf("waitHTTP: %v, want ready", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "exited") || !strings.Contains(err.Error(), "answered") {
				t.Fatalf("waitHTTP: %v, want the exit and the wrong answer reported", err)
			}
		})
	}
}
