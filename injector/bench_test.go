package injector

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkReview is one admission review end to end in the handler
// (decode, mutate with the real sidecar bootstrap, diff, encode), without
// the TLS transport: the injector's share of a pod creation's latency.
func BenchmarkReview(b *testing.B) {
	for _, file := range []string{"no-env.yaml", "several-containers.yaml"} {
		b.Run(file, func(b *testing.B) {
			m, err := NewMutator(realConfig(b), nil, fakeAccounts{"acme": true}, nil)
			if err != nil {
				b.Fatal(err)
			}
			h := NewWebhook(m, staticNamespaces{Name: "fn", Labels: map[string]string{LabelInject: ValueEnabled, KeyAccount: "acme"}}, 0, nil)
			pod, err := readPodFile(file)
			if err != nil {
				b.Fatal(err)
			}
			body := admissionReview("u", "fn", pod, false)
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				req := httptest.NewRequest(http.MethodPost, WebhookPath, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK || !bytes.Contains(rec.Body.Bytes(), []byte(`"patch"`)) {
					b.Fatalf("%d %s", rec.Code, rec.Body.Bytes())
				}
			}
		})
	}
}
