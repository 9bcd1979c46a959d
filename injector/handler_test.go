package injector

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestWebhookRequestHygiene(t *testing.T) {
	srv := startWebhook(t, testConfig(), false)
	pod := readPod(t, "no-env.yaml")
	review := admissionReview("u1", "fn", pod, false)

	tests := []struct {
		name        string
		method      string
		contentType string
		body        []byte
		wantStatus  int
		wantBody    string
	}{
		{"GET", http.MethodGet, "application/json", nil, http.StatusMethodNotAllowed, "POST"},
		{"wrong content type", http.MethodPost, "text/plain", review, http.StatusUnsupportedMediaType, "application/json"},
		{"no content type", http.MethodPost, "", review, http.StatusUnsupportedMediaType, "application/json"},
		{"empty body", http.MethodPost, "application/json", nil, http.StatusBadRequest, "empty body"},
		{"not JSON", http.MethodPost, "application/json", []byte("{"), http.StatusBadRequest, "not an AdmissionReview"},
		{"other kind", http.MethodPost, "application/json", []byte(`{"kind":"Pod","apiVersion":"v1"}`), http.StatusBadRequest, "AdmissionReview"},
		{"no request", http.MethodPost, "application/json", []byte(`{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}`), http.StatusBadRequest, "with a request"},
		{"too large", http.MethodPost, "application/json", bytes.Repeat([]byte(" "), maxReviewBytes+1), http.StatusRequestEntityTooLarge, "larger than"},
		{"charset parameter", http.MethodPost, "application/json; charset=utf-8", review, http.StatusOK, `"uid":"u1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, srv.URL+WebhookPath, bytes.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantStatus || !strings.Contains(string(body), tt.wantBody) {
				t.Errorf("got %d %q, want %d containing %q", resp.StatusCode, body, tt.wantStatus, tt.wantBody)
			}
		})
	}
}

// TestWebhookOtherRequests: requests the webhook is not for pass unchanged.
func TestWebhookOtherRequests(t *testing.T) {
	srv := startWebhook(t, testConfig(), false)
	pod := readPod(t, "no-env.yaml")
	edit := func(f func(req map[string]any)) []byte {
		var r map[string]any
		if err := json.Unmarshal(admissionReview("u-other", "fn", pod, false), &r); err != nil {
			t.Fatal(err)
		}
		f(r["request"].(map[string]any))
		b, _ := json.Marshal(r)
		return b
	}
	tests := map[string][]byte{
		"UPDATE": edit(func(r map[string]any) { r["operation"] = "UPDATE"; r["oldObject"] = json.RawMessage(pod) }),
		"subresource": edit(func(r map[string]any) {
			r["subResource"] = "ephemeralcontainers"
			r["operation"] = "UPDATE"
		}),
		"not a pod": edit(func(r map[string]any) {
			r["kind"] = map[string]string{"group": "apps", "version": "v1", "kind": "Deployment"}
			r["object"] = json.RawMessage(`{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"}}`)
		}),
	}
	for name, body := range tests {
		t.Run(name, func(t *testing.T) {
			resp := srv.call(t, body)
			if !resp.Allowed || len(resp.Patch) != 0 || resp.UID != "u-other" {
				t.Errorf("got allowed=%v patch=%s uid=%q, want allowed, no patch, uid echoed", resp.Allowed, resp.Patch, resp.UID)
			}
		})
	}
}

// TestWebhookV1beta1: an older API server's review is answered in its own
// version.
func TestWebhookV1beta1(t *testing.T) {
	srv := startWebhook(t, testConfig(), false)
	body := bytes.Replace(admissionReview("u-beta", "fn", readPod(t, "no-env.yaml"), false),
		[]byte(`"admission.k8s.io/v1"`), []byte(`"admission.k8s.io/v1beta1"`), 1)
	resp, err := srv.Client().Post(srv.URL+WebhookPath, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out review
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	if out.APIVersion != "admission.k8s.io/v1beta1" || out.Response == nil || len(out.Response.Patch) == 0 {
		t.Errorf("got %+v, want a v1beta1 review with a patch", out)
	}
}

type failingNamespaces struct{}

func (failingNamespaces) Namespace(context.Context, string) (Namespace, error) {
	return Namespace{}, errors.New("informer not synced")
}

// TestWebhookInternalError: when the injector cannot decide, the API server
// gets a 500 and applies the webhook's failurePolicy.
func TestWebhookInternalError(t *testing.T) {
	m, err := NewMutator(testConfig(), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(NewWebhook(m, failingNamespaces{}, 0, nil))
	defer srv.Close()
	resp, err := srv.Client().Post(srv.URL, "application/json", bytes.NewReader(admissionReview("u", "fn", readPod(t, "no-env.yaml"), false)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(string(body), "informer not synced") {
		t.Errorf("got %d %q, want 500 naming the cause", resp.StatusCode, body)
	}
}
