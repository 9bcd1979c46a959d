package extproc_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tollgate-dev/tollgate/pkg/extproc"
	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/internal/gwtest"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// The benchmarks measure the processor alone: it runs in a child process
// (this test binary, re-executed), so the CPU and allocations it reports
// through getrusage and runtime.MemStats are the server's, not the
// benchmark client's.

const benchServerEnv = "TOLLGATE_EXTPROC_BENCH_SERVER"

func TestMain(m *testing.M) {
	if os.Getenv(benchServerEnv) == "1" {
		if err := benchServer(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	os.Exit(m.Run())
}

// benchServer serves the processor on loopback, prints its address and a
// token, and answers each "stats" line on stdin with its CPU time (ns,
// user+system) and mallocs so far; it exits when stdin closes.
func benchServer() error {
	st, err := gwtest.Build(gwtest.Options{Recorder: gateway.RecorderFunc(func(usage.Record) {})})
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	gs := grpc.NewServer(extproc.ServerOptions(gateway.DefaultMaxRequestBody)...)
	if os.Getenv(benchServerEnv+"_FLOOR") == "1" {
		extprocv3.RegisterExternalProcessorServer(gs, floor{})
	} else {
		extproc.New(st.Gateway, extproc.Options{}).Register(gs)
	}
	go func() { _ = gs.Serve(lis) }()
	// TOLLGATE_EXTPROC_BENCH_PROFILE=FILE writes the server's CPU profile.
	if path := os.Getenv("TOLLGATE_EXTPROC_BENCH_PROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); _ = f.Close() }()
	}
	fmt.Printf("%s %s\n", lis.Addr(), st.Token)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			return err
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		fmt.Printf("%d %d\n", ru.Utime.Nano()+ru.Stime.Nano(), ms.Mallocs)
	}
	gs.Stop()
	return nil
}

// floor is the least an ext_proc server can do: answer every message
// "continue" at once. Over the same gRPC settings it is the transport's
// share of the processor's cost.
type floor struct {
	extprocv3.UnimplementedExternalProcessorServer
}

func (floor) Process(srv extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		req, err := srv.Recv()
		if err != nil {
			return nil
		}
		r := &extprocv3.ProcessingResponse{}
		switch req.GetRequest().(type) {
		case *extprocv3.ProcessingRequest_RequestHeaders:
			r.Response = &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}
		case *extprocv3.ProcessingRequest_RequestBody:
			r.Response = &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}
		case *extprocv3.ProcessingRequest_ResponseHeaders:
			r.Response = &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}
		default:
			r.Response = &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}
		}
		if err := srv.Send(r); err != nil {
			return err
		}
	}
}

type benchProc struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Scanner
	token  string
	client extprocv3.ExternalProcessorClient
}

// startBenchServer starts the processor, or with floor set the do-nothing
// server, in a child process.
func startBenchServer(b *testing.B, floor bool) *benchProc {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), benchServerEnv+"=1")
	if floor {
		cmd.Env = append(cmd.Env, benchServerEnv+"_FLOOR=1")
	}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = in.Close(); _ = cmd.Wait() })
	p := &benchProc{cmd: cmd, in: in, out: bufio.NewScanner(outPipe)}
	if !p.out.Scan() {
		b.Fatal("bench server did not start")
	}
	addr, tok, _ := strings.Cut(p.out.Text(), " ")
	p.token = tok
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	p.client = extprocv3.NewExternalProcessorClient(conn)
	return p
}

// stats reads the server's CPU time and mallocs.
func (p *benchProc) stats(b *testing.B) (cpu time.Duration, mallocs uint64) {
	b.Helper()
	if _, err := io.WriteString(p.in, "stats\n"); err != nil {
		b.Fatal(err)
	}
	if !p.out.Scan() {
		b.Fatal("bench server gone")
	}
	a, m, _ := strings.Cut(p.out.Text(), " ")
	ns, _ := strconv.ParseInt(a, 10, 64)
	mallocs, _ = strconv.ParseUint(m, 10, 64)
	return time.Duration(ns), mallocs
}

// benchWorkers are the numbers of streams in flight to measure: 1 and 32,
// or those listed in TOLLGATE_EXTPROC_BENCH_WORKERS (e.g. "32,256").
func benchWorkers(b *testing.B) []int {
	env := os.Getenv("TOLLGATE_EXTPROC_BENCH_WORKERS")
	if env == "" {
		return []int{1, 32}
	}
	var ws []int
	for f := range strings.SplitSeq(env, ",") {
		w, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || w < 1 {
			b.Fatalf("TOLLGATE_EXTPROC_BENCH_WORKERS=%q: want positive numbers separated by commas", env)
		}
		ws = append(ws, w)
	}
	return ws
}

// BenchmarkRequest: processor CPU and allocations per non-streamed
// request, every ext_proc message of it over real gRPC on loopback.
//
// The sequential runs are one request at a time, a ping-pong that leaves
// the server's scheduler spinning between messages; the concurrent runs
// keep 32 streams in flight, as a processor serving many sidecars does,
// where grpc-go batches reads and writes across streams.
func BenchmarkRequest(b *testing.B) {
	for _, workers := range benchWorkers(b) {
		for _, floor := range []bool{false, true} {
			name := "processor"
			if floor {
				name = "grpc-floor"
			}
			if workers > 1 {
				name += fmt.Sprintf("/concurrent-%d", workers)
			}
			b.Run(name, func(b *testing.B) { benchRequest(b, floor, workers) })
		}
	}
}

func benchRequest(b *testing.B, floor bool, workers int) {
	p := startBenchServer(b, floor)
	msgs := extproc.BenchRequest(p.token)
	one := func() {
		stream, err := p.client.Process(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		for _, m := range msgs {
			if err := stream.Send(m); err != nil {
				b.Fatal(err)
			}
			r, err := stream.Recv()
			if err != nil {
				b.Fatal(err)
			}
			if r.GetImmediateResponse() != nil {
				b.Fatalf("refused: %s", r.GetImmediateResponse().GetBody())
			}
		}
		_ = stream.CloseSend()
		if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
			b.Fatal(err)
		}
	}
	for range 200 { // warm up connections, pools and caches
		one()
	}
	cpu0, m0 := p.stats(b)
	if workers == 1 {
		for b.Loop() {
			one()
		}
	} else {
		var next atomic.Int64
		var wg sync.WaitGroup
		b.ResetTimer()
		for range workers {
			wg.Go(func() {
				for next.Add(1) <= int64(b.N) {
					one()
				}
			})
		}
		wg.Wait()
		b.StopTimer()
	}
	cpu1, m1 := p.stats(b)
	b.ReportMetric(float64((cpu1-cpu0).Microseconds())/float64(b.N), "server-cpu-µs/req")
	b.ReportMetric(float64(m1-m0)/float64(b.N), "server-allocs/req")
}

// BenchmarkChunk: processor CPU, allocations and round trip per streamed
// response chunk (one SSE event each), with the client's own usage chunk
// and with the hidden one the gateway edits out; one stream at a time, and
// 32 streams in flight (a processor serving many sidecars), where the
// round-trip figures include queueing behind the other streams.
func BenchmarkChunk(b *testing.B) {
	for _, workers := range benchWorkers(b) {
		for _, c := range []struct {
			name          string
			hidden, floor bool
		}{{"passthrough", false, false}, {"hidden-usage", true, false}, {"grpc-floor", false, true}} {
			name := c.name
			if workers > 1 {
				name += fmt.Sprintf("/concurrent-%d", workers)
			}
			b.Run(name, func(b *testing.B) { benchChunk(b, c.hidden, c.floor, workers) })
		}
	}
}

func benchChunk(b *testing.B, hidden, floor bool, workers int) {
	p := startBenchServer(b, floor)
	msgs := extproc.BenchRequest(p.token)
	if hidden {
		msgs[1] = reqBody(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Tell me a long story."}]}`, true)
	} else {
		msgs[1] = reqBody(`{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Tell me a long story."}]}`, true)
	}
	msgs[2] = respHeaders(headerList{{":status", "200"}, {"content-type", "text/event-stream; charset=utf-8"}, {"x-request-id", "req_1"}})
	usageField := ""
	if hidden {
		usageField = `,"usage":null` // what include_usage adds to every chunk
	}
	event := respBody(`data: {"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion.chunk","created":1767225600,`+
		`"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_0ba0d124f1","choices":[{"index":0,`+
		`"delta":{"content":" gateway"},"logprobs":null,"finish_reason":null}]`+usageField+"}\n\n", false)
	// open starts a stream up to its response body; send sends one chunk
	// and waits for the reply.
	open := func() extprocv3.ExternalProcessor_ProcessClient {
		stream, err := p.client.Process(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		for _, m := range msgs[:3] {
			if err := stream.Send(m); err != nil {
				b.Fatal(err)
			}
			if _, err := stream.Recv(); err != nil {
				b.Fatal(err)
			}
		}
		return stream
	}
	send := func(stream extprocv3.ExternalProcessor_ProcessClient) time.Duration {
		start := time.Now()
		if err := stream.Send(event); err != nil {
			b.Fatal(err)
		}
		r, err := stream.Recv()
		if err != nil {
			b.Fatal(err)
		}
		if hidden != (r.GetResponseBody().GetResponse() != nil) {
			b.Fatalf("reply %v", r)
		}
		return time.Since(start)
	}
	streams := make([]extprocv3.ExternalProcessor_ProcessClient, workers)
	for i := range streams {
		streams[i] = open()
		for range 200 {
			send(streams[i])
		}
	}
	lats := make([][]time.Duration, workers)
	cpu0, m0 := p.stats(b)
	if workers == 1 {
		for b.Loop() {
			lats[0] = append(lats[0], send(streams[0]))
		}
	} else {
		var next atomic.Int64
		var wg sync.WaitGroup
		b.ResetTimer()
		for i := range workers {
			wg.Go(func() {
				for next.Add(1) <= int64(b.N) {
					lats[i] = append(lats[i], send(streams[i]))
				}
			})
		}
		wg.Wait()
		b.StopTimer()
	}
	cpu1, m1 := p.stats(b)
	b.ReportMetric(float64((cpu1-cpu0).Nanoseconds())/1e3/float64(b.N), "server-cpu-µs/chunk")
	b.ReportMetric(float64(m1-m0)/float64(b.N), "server-allocs/chunk")
	lat := slices.Concat(lats...)
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-rtt-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-rtt-µs")
	for _, s := range streams {
		_ = s.CloseSend()
	}
}
