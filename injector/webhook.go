package injector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// WebhookPath is where the webhook serves AdmissionReviews.
const WebhookPath = "/inject"

// maxReviewBytes caps a request body. The API server's own limit on an
// object is about 1.5 MiB (etcd's), and a review carries the object once
// (twice only for UPDATE, which the webhook is not registered for).
const maxReviewBytes = 4 << 20

// NamespaceGetter returns a namespace by name.
type NamespaceGetter interface {
	Namespace(ctx context.Context, name string) (Namespace, error)
}

// Webhook is the mutating admission webhook's HTTP handler.
type Webhook struct {
	mutator    *Mutator
	namespaces NamespaceGetter
	log        *slog.Logger
	// Timeout bounds the work on one review, below the webhook's
	// timeoutSeconds so that the API server gets our answer, not its own
	// timeout.
	timeout time.Duration
}

// NewWebhook returns the handler. timeout bounds each review (5 s when zero).
func NewWebhook(m *Mutator, namespaces NamespaceGetter, timeout time.Duration, log *slog.Logger) *Webhook {
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Webhook{mutator: m, namespaces: namespaces, timeout: timeout, log: log}
}

// review is an AdmissionReview of either version: v1beta1 has the same
// shape, and the answer must carry the version it was asked in.
type review struct {
	APIVersion string                         `json:"apiVersion"`
	Kind       string                         `json:"kind"`
	Request    *admissionv1.AdmissionRequest  `json:"request,omitempty"`
	Response   *admissionv1.AdmissionResponse `json:"response,omitempty"`
}

var podKind = metav1.GroupVersionKind{Group: "", Version: "v1", Kind: "Pod"}

func (w *Webhook) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		rw.Header().Set("Allow", http.MethodPost)
		http.Error(rw, "POST an AdmissionReview", http.StatusMethodNotAllowed)
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		http.Error(rw, "Content-Type must be application/json", http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, maxReviewBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		http.Error(rw, fmt.Sprintf("AdmissionReview larger than %d bytes", maxReviewBytes), http.StatusRequestEntityTooLarge)
		return
	case err != nil:
		http.Error(rw, "reading the request body failed", http.StatusBadRequest)
		return
	case len(body) == 0:
		http.Error(rw, "empty body: POST an AdmissionReview", http.StatusBadRequest)
		return
	}
	var in review
	if err := json.Unmarshal(body, &in); err != nil {
		http.Error(rw, "body is not an AdmissionReview: "+err.Error(), http.StatusBadRequest)
		return
	}
	if in.Kind != "AdmissionReview" || (in.APIVersion != "admission.k8s.io/v1" && in.APIVersion != "admission.k8s.io/v1beta1") || in.Request == nil {
		http.Error(rw, "want an admission.k8s.io/v1 AdmissionReview with a request", http.StatusBadRequest)
		return
	}

	ctx, cancel := context.WithTimeout(r.Context(), w.timeout)
	defer cancel()
	resp, err := w.review(ctx, in.Request)
	if err != nil {
		// A 500 makes the API server apply the webhook's failurePolicy,
		// which is the operator's choice for "the injector cannot decide".
		w.log.ErrorContext(ctx, "injector: review failed", "uid", in.Request.UID, "namespace", in.Request.Namespace, "err", err)
		http.Error(rw, err.Error(), http.StatusInternalServerError)
		return
	}
	resp.UID = in.Request.UID
	out, err := json.Marshal(review{APIVersion: in.APIVersion, Kind: "AdmissionReview", Response: resp})
	if err != nil {
		http.Error(rw, "encoding the response failed", http.StatusInternalServerError)
		return
	}
	rw.Header().Set("Content-Type", "application/json")
	_, _ = rw.Write(out)
}

// review answers one admission request. An error is the injector's own
// failure; a pod the injector refuses to touch is allowed unchanged.
func (w *Webhook) review(ctx context.Context, req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, error) {
	allow := &admissionv1.AdmissionResponse{Allowed: true}
	if req.Kind != podKind || req.SubResource != "" || req.Operation != admissionv1.Create {
		return allow, nil // only pod creation is ours; anything else passes
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return nil, fmt.Errorf("decoding the pod: %w", err)
	}
	// managedFields are large and none of ours; both sides of the diff lose
	// them, so the patch does not touch them.
	pod.ManagedFields = nil
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace // not set yet on the object at CREATE
	}
	ns, err := w.namespaces.Namespace(ctx, req.Namespace)
	if err != nil {
		return nil, fmt.Errorf("namespace %q: %w", req.Namespace, err)
	}
	res := w.mutator.Mutate(ctx, Request{Pod: &pod, Namespace: ns})
	w.log.InfoContext(ctx, "injector: reviewed pod",
		"uid", req.UID, "namespace", req.Namespace, "name", podName(&pod),
		"injected", res.Injected, "reason", res.Reason, "dryRun", req.DryRun != nil && *req.DryRun)
	ops, err := CreatePatch(&pod, res.Pod)
	if err != nil {
		return nil, err
	}
	if len(ops) == 0 {
		return allow, nil
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return nil, fmt.Errorf("encoding the patch: %w", err)
	}
	pt := admissionv1.PatchTypeJSONPatch
	allow.Patch, allow.PatchType = patch, &pt
	return allow, nil
}

// podName names a pod for logs: its name, or its generateName with a dash.
func podName(pod *corev1.Pod) string {
	if pod.Name != "" {
		return pod.Name
	}
	return pod.GenerateName + "*"
}
