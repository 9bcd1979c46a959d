package replay

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/usage"
)

// chunkPlan is one way of cutting a response body into writes.
type chunkPlan struct {
	name  string
	sizes []int // cycled; {0} is the whole body in one write
}

// chunkPlans: one byte at a time, seeded random sizes in three ranges, the
// replay's default irregular cycle, and the whole body at once.
func chunkPlans() []chunkPlan {
	plans := []chunkPlan{{name: "1-byte", sizes: []int{1}}}
	for i, hi := range []int{16, 300, 5000} {
		seed := uint64(20260101 + i)
		r := rand.New(rand.NewPCG(seed, seed*7919))
		sizes := make([]int, 64)
		for j := range sizes {
			sizes[j] = 1 + r.IntN(hi)
		}
		plans = append(plans, chunkPlan{name: fmt.Sprintf("random-seed%d-max%d", seed, hi), sizes: sizes})
	}
	return append(plans,
		chunkPlan{name: "default", sizes: DefaultStreamChunks},
		chunkPlan{name: "whole", sizes: []int{0}})
}

// streamCases are the replayed 2xx streams with their variants (the Gemini
// query-key variant only changes authentication and is left out).
func streamCases(t *testing.T) (cs []replayCase, vs [][]variant) {
	for _, c := range servedCases(t) {
		if !c.It.IsStream() || c.It.Status/100 != 2 {
			continue
		}
		var keep []variant
		for _, v := range variants(t, c) {
			if !v.queryKey && !v.noKey {
				keep = append(keep, v)
			}
		}
		cs, vs = append(cs, c), append(vs, keep)
	}
	return cs, vs
}

// meterResult is what must not depend on chunking.
type meterResult struct {
	Tokens    usage.Tokens
	Estimated bool
	Status    usage.Status
	Body      []byte
}

func (m meterResult) equal(o meterResult) bool {
	return m.Tokens == o.Tokens && m.Estimated == o.Estimated && m.Status == o.Status && bytes.Equal(m.Body, o.Body)
}

func (m meterResult) String() string {
	return fmt.Sprintf("tokens %+v estimated %v status %s body %d bytes", m.Tokens, m.Estimated, m.Status, len(m.Body))
}

// TestChunkingThroughFrontDoors replays every recorded stream through each
// front door with the upstream writing (and flushing) the body in
// different chunk sizes, and envoysim cutting the chunks the processor sees
// the same way (1 byte, random, whole): the metered usage and the bytes the
// client receives must be the same for all, and as recorded (the bytes
// without the gateway, less the documented hidden usage chunk).
func TestChunkingThroughFrontDoors(t *testing.T) {
	cs, vs := streamCases(t)
	if len(cs) == 0 {
		t.Fatal("no recorded streams")
	}
	for _, d := range frontDoors {
		for i, c := range cs {
			for _, v := range vs[i] {
				t.Run(d.name+"/"+c.It.Name()+"/"+v.name, func(t *testing.T) {
					t.Parallel()
					chunkingCase(t, d, c, v)
				})
			}
		}
	}
}

func chunkingCase(t *testing.T, d frontDoor, c replayCase, v variant) {
	var base meterResult
	var baseName string
	for _, p := range chunkPlans() {
		out := replay(t, d, c, v, p.sizes)
		if t.Run(p.name, func(t *testing.T) { checkOutcome(t, c, v, out) }) && len(out.Records) == 1 {
			r := meterResult{out.Records[0].Tokens, out.Records[0].Estimated, out.Records[0].Status, out.Body}
			if baseName == "" {
				base, baseName = r, p.name
			} else if !r.equal(base) {
				t.Errorf("chunks %s: %v; chunks %s: %v", p.name, r, baseName, base)
			}
		}
	}
}

// TestChunkingExchange drives gateway.Exchange directly, as an adapter
// does, so every chunk boundary is exactly the planned one (over TCP the
// proxy may read several writes at once). The end of the body is signalled
// both ways adapters do: an empty final call, or end on the last chunk.
func TestChunkingExchange(t *testing.T) {
	cs, vs := streamCases(t)
	for i, c := range cs {
		for _, v := range vs[i] {
			t.Run(c.It.Name()+"/"+v.name, func(t *testing.T) {
				t.Parallel()
				wantBody := wantClientBody(t, c, v)
				var base meterResult
				var baseName string
				for _, p := range chunkPlans() {
					for _, endOnLast := range []bool{false, true} {
						name := fmt.Sprintf("%s/end-on-last=%v", p.name, endOnLast)
						r := driveExchange(t, c, v, p.sizes, endOnLast)
						if !bytes.Equal(r.Body, wantBody) {
							t.Errorf("%s: forwarded bytes differ (%s)", name, diffAt(r.Body, wantBody))
						}
						if baseName == "" {
							base, baseName = r, name
							continue
						}
						if !r.equal(base) {
							t.Errorf("%s: %v; %s: %v", name, r, baseName, base)
						}
					}
				}
				want, ok, err := recordedUsage(c)
				if err != nil {
					t.Fatal(err)
				}
				if ok && (base.Tokens != want || base.Estimated) {
					t.Errorf("metered %v; the recording says %+v", base, want)
				}
				if !ok && !base.Estimated {
					t.Errorf("metered %v; the recording has no usage, want an estimate", base)
				}
			})
		}
	}
}

func driveExchange(t *testing.T, c replayCase, v variant, sizes []int, endOnLast bool) meterResult {
	t.Helper()
	f := getFixture(t)
	gw := newGateway(t, nil, upstreamKeys)
	x := gw.NewExchange(context.Background(), "replay-exchange")
	h := gateway.Headers{{Name: "content-type", Value: "application/json"}}
	switch c.Provider {
	case "openai":
		h = append(h, gateway.Header{Name: "authorization", Value: "Bearer " + f.token})
	case "anthropic":
		h = append(h, gateway.Header{Name: "x-api-key", Value: f.token},
			gateway.Header{Name: "anthropic-version", Value: "2023-06-01"})
	case "gemini":
		h = append(h, gateway.Header{Name: "x-goog-api-key", Value: f.token})
	}
	out := x.RequestHeaders(http.MethodPost, c.Target, h)
	if out.Action != gateway.NeedBody {
		t.Fatalf("RequestHeaders: action %v, response %d %s", out.Action, out.Response.Status, out.Response.Body)
	}
	out = x.RequestBody(v.requestBody(c))
	if out.Action != gateway.Forward {
		t.Fatalf("RequestBody: action %v, response %d %s", out.Action, out.Response.Status, out.Response.Body)
	}
	ct, _ := c.It.ServedContentType()
	hdr := x.ResponseHeaders(c.It.Status, gateway.Headers{{Name: "Content-Type", Value: ct}})
	if got := hdr.Get("content-type"); got != ct {
		t.Errorf("content-type %q, want %q", got, ct)
	}
	var body []byte
	parts := Split(c.It.Body, sizes)
	for i, p := range parts {
		end := endOnLast && i == len(parts)-1
		body = append(body, x.ResponseBody(p, end)...)
	}
	if !endOnLast {
		body = append(body, x.ResponseBody(nil, true)...)
	}
	rec := x.Settle(gateway.Completed)
	if rec.Provider != c.Provider || !strings.EqualFold(rec.Model, c.Model) {
		t.Errorf("record %+v", rec)
	}
	return meterResult{Tokens: rec.Tokens, Estimated: rec.Estimated, Status: rec.Status, Body: body}
}
