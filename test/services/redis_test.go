package services

import (
	"testing"
)

func TestRedisStopRestart(t *testing.T) {
	r := StartRedis(t)
	addr := r.Addr()
	if err := ping(addr); err != nil {
		t.Fatalf("started server: %v", err)
	}
	r.Stop()
	if err := ping(addr); err == nil {
		t.Fatal("stopped server still answers")
	}
	r.Stop() // again: nothing to do
	r.Restart()
	if r.Addr() != addr {
		t.Fatalf("restarted on %s, want %s", r.Addr(), addr)
	}
	if err := ping(addr); err != nil {
		t.Fatalf("restarted server: %v", err)
	}
}
