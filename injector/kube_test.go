package injector

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// TestNamespaceListerStaleCache: the API server decides with its own view
// whether the webhook is called, so a namespace our cache does not have
// yet (created a moment ago, as `kubectl apply` of a Namespace and a Pod
// does) or has from before it was opted in or given its account is read
// from the API: not refused (a 500 under failurePolicy Fail refuses the
// pod) nor silently left un-injected. A cached namespace that is complete
// costs no API call.
func TestNamespaceListerStaleCache(t *testing.T) {
	enabled := map[string]string{LabelInject: ValueEnabled, KeyAccount: "acme"}
	tests := []struct {
		name      string
		cached    *corev1.Namespace // nil: not in the cache
		live      *corev1.Namespace // nil: not in the API either
		wantOptIn bool
		wantAcct  string
		wantErr   bool
		wantCalls int
	}{
		{"cached and complete", namespace("fn", enabled, nil), namespace("fn", enabled, nil), true, "acme", false, 0},
		{"not cached yet", nil, namespace("fn", enabled, nil), true, "acme", false, 1},
		{"cached before opting in", namespace("fn", nil, nil), namespace("fn", enabled, nil), true, "acme", false, 1},
		{"cached before its account", namespace("fn", map[string]string{LabelInject: ValueEnabled}, nil), namespace("fn", enabled, nil), true, "acme", false, 1},
		{"not opted in anywhere", namespace("fn", nil, nil), namespace("fn", nil, nil), false, "", false, 1},
		{"missing everywhere", nil, nil, false, "", true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
			if tt.cached != nil {
				if err := indexer.Add(tt.cached); err != nil {
					t.Fatal(err)
				}
			}
			client := fake.NewClientset()
			if tt.live != nil {
				client = fake.NewClientset(tt.live)
			}
			l := NamespaceLister{Lister: corelisters.NewNamespaceLister(indexer), Client: client}
			ns, err := l.Namespace(context.Background(), "fn")
			switch {
			case tt.wantErr:
				if !apierrors.IsNotFound(err) {
					t.Errorf("err = %v, want not found", err)
				}
			case err != nil:
				t.Fatal(err)
			case ns.OptedIn() != tt.wantOptIn || ns.Account() != tt.wantAcct || ns.Name != "fn":
				t.Errorf("namespace %+v: opted in %v account %q, want %v %q", ns, ns.OptedIn(), ns.Account(), tt.wantOptIn, tt.wantAcct)
			}
			if got := len(client.Actions()); got != tt.wantCalls {
				t.Errorf("%d API calls, want %d: %v", got, tt.wantCalls, client.Actions())
			}
		})
	}
}
