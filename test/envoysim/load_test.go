//go:build load

package envoysim_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/test/harness"
)

// TestSustainedLoad holds LOAD_STREAMS (default 1000) streams open at once
// through envoysim -> `tollgate serve` (ext_proc) -> the mock provider for
// LOAD_DURATION (default 60s), then checks that nothing leaked: the
// processor's and the simulator's goroutines return to their idle counts.
// Run with `make load-envoy` (build tag load; not part of make test).
func TestSustainedLoad(t *testing.T) {
	streams := envInt(t, "LOAD_STREAMS", 1000)
	duration := time.Duration(envInt(t, "LOAD_DURATION", 60)) * time.Second
	overlay := filepath.Join(t.TempDir(), "catalog.yaml")
	// A model of its own with a TPM far above what the run can spend, so
	// the load measures streaming, not rate limiting.
	if err := os.WriteFile(overlay, []byte(`models:
  - provider: openai
    name: gpt-load-test
    kind: chat
    price: {input: 0.15, output: 0.6}
    tpm: {free: 1000000000000, personal: 1000000000000, pro: 1000000000000}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	door := harness.StartEnvoy(t, harness.DoorOptions{Catalog: overlay, LogLevel: "info",
		ChunkDelay: 50 * time.Millisecond, Debug: true})
	debug := door.DebugAddr
	pid := door.ProcessorPID()
	baseProc := goroutines(t, debug)
	baseSim := runtime.NumGoroutine()
	rssBefore := rss(t, pid, "VmRSS")

	tr := &http.Transport{MaxIdleConnsPerHost: streams, DisableCompression: true}
	client := &http.Client{Transport: tr}
	body := `{"model":"gpt-load-test","stream":true,"messages":[{"role":"user","content":"load [[mock chunks=20]]"}]}`
	var ok, failed, chunks atomic.Int64
	var firstErr sync.Once
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				n, err := stream(client, door.BaseURL(), door.GatewayToken(), body)
				chunks.Add(int64(n))
				if err != nil {
					failed.Add(1)
					firstErr.Do(func() { t.Logf("first failure: %v", err) })
					continue
				}
				ok.Add(1)
			}
		}()
	}
	// Sample the processor's RSS while the load runs.
	var peak int64
	tick := time.NewTicker(time.Second)
	for done := false; !done; {
		select {
		case <-tick.C:
			if v := rss(t, pid, "VmRSS"); v > peak {
				peak = v
			}
		case <-ctx.Done():
			done = true
		}
	}
	tick.Stop()
	wg.Wait()
	elapsed := time.Since(start)
	tr.CloseIdleConnections()
	door.Proxy.CloseIdleConnections()

	// Idle again: goroutines must come back down (give in-flight settles
	// and closed connections a moment to wind down).
	var proc, sim int
	for i := 0; i < 100; i++ {
		proc, sim = goroutines(t, debug), runtime.NumGoroutine()
		if proc <= baseProc+5 && sim <= baseSim+10 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("streams=%d duration=%s completed=%d failed=%d throughput=%.0f streams/s %.0f chunks/s",
		streams, elapsed.Round(time.Second), ok.Load(), failed.Load(), float64(ok.Load())/elapsed.Seconds(), float64(chunks.Load())/elapsed.Seconds())
	t.Logf("processor RSS: before %d KiB, peak %d KiB (VmHWM %d KiB), after %d KiB", rssBefore, peak, rss(t, pid, "VmHWM"), rss(t, pid, "VmRSS"))
	t.Logf("goroutines: processor %d idle -> %d after; envoysim+client %d idle -> %d after", baseProc, proc, baseSim, sim)
	if failed.Load() > ok.Load()/1000 {
		t.Errorf("%d of %d streams failed", failed.Load(), ok.Load()+failed.Load())
	}
	if proc > baseProc+5 {
		t.Errorf("processor goroutines %d after the load, %d before: a leak", proc, baseProc)
	}
	if sim > baseSim+10 {
		t.Errorf("envoysim goroutines %d after the load, %d before: a leak", sim, baseSim)
	}
	if v := door.Proxy.Violations(); len(v) > 0 {
		t.Errorf("strict mode: %d problems, first %s", len(v), v[0])
	}
}

// stream makes one streaming call and counts its SSE events.
func stream(c *http.Client, base, token, body string) (int, error) {
	req, err := http.NewRequest(http.MethodPost, base+"/openai/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return 0, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	n := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: ") {
			n++
		}
	}
	if err := sc.Err(); err != nil {
		return n, err
	}
	if n == 0 {
		return 0, fmt.Errorf("no events")
	}
	return n, nil
}

var goroutineTotal = regexp.MustCompile(`goroutine profile: total (\d+)`)

// goroutines reads the processor's goroutine count from its pprof endpoint.
func goroutines(t *testing.T, debug string) int {
	resp, err := http.Get("http://" + debug + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := goroutineTotal.FindSubmatch(b)
	if m == nil {
		t.Fatalf("no goroutine total in %.200s", b)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// rss reads a memory line (KiB) of /proc/PID/status.
func rss(t *testing.T, pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return n
}
