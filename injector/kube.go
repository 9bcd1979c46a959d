package injector

import (
	"context"
	"fmt"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
)

// NamespaceLister is a NamespaceGetter over an informer's cache: admission
// must not wait on an API round trip for something that changes rarely.
type NamespaceLister struct {
	Lister corelisters.NamespaceLister
	// Client, when set, is asked when the cache cannot be right: the
	// namespace is not in it, or is not opted in or names no account. The
	// API server called the webhook because its own view says the
	// namespace is opted in, and a cache that lags (a namespace created or
	// labelled a moment before the pod) would otherwise refuse the pod or
	// leave it un-injected. The API server's own namespace matcher falls
	// back the same way.
	Client kubernetes.Interface
}

// Namespace implements NamespaceGetter.
func (l NamespaceLister) Namespace(ctx context.Context, name string) (Namespace, error) {
	ns, err := l.Lister.Get(name)
	if err != nil && !apierrors.IsNotFound(err) {
		return Namespace{}, err
	}
	if err == nil && (l.Client == nil || (NamespaceOf(ns).OptedIn() && NamespaceOf(ns).Account() != "")) {
		return NamespaceOf(ns), nil
	}
	if l.Client == nil {
		return Namespace{}, err
	}
	live, err := l.Client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return Namespace{}, err
	}
	return NamespaceOf(live), nil
}

// APIKeys reads envFrom source keys from the API server, one GET per
// source (admission of one pod asks a few; a cluster-wide ConfigMap
// informer would hold every ConfigMap in memory for that). Only key names
// are kept, never values.
type APIKeys struct {
	Client kubernetes.Interface
	// ReadSecrets allows reading Secrets' keys. It needs RBAC get on
	// secrets in every opted-in namespace, which the chart does not grant
	// by default: without it, a Secret source's keys are unknown and the
	// envFrom policy applies.
	ReadSecrets bool
}

// Keys implements SourceKeys.
func (k APIKeys) Keys(ctx context.Context, namespace, kind, name string) ([]string, error) {
	switch kind {
	case KindConfigMap:
		cm, err := k.Client.CoreV1().ConfigMaps(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		keys := make([]string, 0, len(cm.Data)+len(cm.BinaryData))
		for key := range cm.Data {
			keys = append(keys, key)
		}
		for key := range cm.BinaryData {
			keys = append(keys, key)
		}
		slices.Sort(keys)
		return keys, nil
	case KindSecret:
		if !k.ReadSecrets {
			return nil, fmt.Errorf("reading Secrets is not enabled")
		}
		s, err := k.Client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		keys := make([]string, 0, len(s.Data))
		for key := range s.Data {
			keys = append(keys, key)
		}
		slices.Sort(keys)
		return keys, nil
	}
	return nil, fmt.Errorf("unknown source kind %q", kind)
}
