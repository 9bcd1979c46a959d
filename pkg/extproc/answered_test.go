package extproc

import (
	"context"
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/gateway"
	"github.com/tollgate-dev/tollgate/pkg/internal/gwtest"
)

// TestBodyAfterTheGatewaysAnswer: once the gateway has answered a request
// itself, a request body that still arrives (Envoy ignored the answer: the
// headers came in observability mode) gets the same answer again, never a
// "continue" that would let the refused request go upstream with the
// client's credential.
func TestBodyAfterTheGatewaysAnswer(t *testing.T) {
	st := gwtest.New(t, gwtest.Options{})
	for _, c := range []struct {
		name, headers string
		status        int
	}{
		{"no route", "H obs\nauthorization: Bearer " + st.Token, 404},
		{"bad token", "H obs\n:method: POST\n:path: /openai/v1/chat/completions\nauthorization: Bearer tg1.forged", 401},
		{"the gateway's own listing", "H obs\n:method: GET\n:path: /openai/v1/models\nauthorization: Bearer " + st.Token, 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newStream(st.Gateway, context.Background(), gateway.NewRequestIDs())
			first, _ := message(c.headers)
			r := s.handle(first)
			s.sent()
			if got := r.GetImmediateResponse().GetStatus().GetCode(); int(got) != c.status {
				t.Fatalf("headers answered %v, want an immediate %d", r, c.status)
			}
			body, _ := message("B eos\n" + `{"model":"gpt-4o-mini","messages":[]}`)
			again := s.handle(body)
			ir := again.GetImmediateResponse()
			if ir == nil {
				t.Fatalf("a body after the gateway's answer got %v, want the answer again", again)
			}
			if int(ir.GetStatus().GetCode()) != c.status || string(ir.GetBody()) != string(r.GetImmediateResponse().GetBody()) {
				t.Errorf("answer again: %d %s, want %d %s", ir.GetStatus().GetCode(), ir.GetBody(), c.status, r.GetImmediateResponse().GetBody())
			}
			// The first envelope carried pooled metadata, back in its pool
			// once sent: it must not go out again.
			if again == r || again.GetDynamicMetadata() != nil {
				t.Errorf("the answer went out again in its first envelope, or with metadata")
			}
		})
	}
}
