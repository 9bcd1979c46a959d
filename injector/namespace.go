package injector

import (
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// systemNamespaces never get anything injected: the cluster's own pods must
// start even when the injector is down.
var systemNamespaces = []string{"kube-system", "kube-public", "kube-node-lease"}

// Namespace is what the injector knows of a pod's namespace.
type Namespace struct {
	Name        string
	Labels      map[string]string
	Annotations map[string]string
}

// NamespaceOf returns the injector's view of ns.
func NamespaceOf(ns *corev1.Namespace) Namespace {
	return Namespace{Name: ns.Name, Labels: ns.Labels, Annotations: ns.Annotations}
}

// OptedIn reports whether the namespace asks for injection.
func (n Namespace) OptedIn() bool { return n.Labels[LabelInject] == ValueEnabled }

// System reports whether n is a cluster system namespace.
func (n Namespace) System() bool { return slices.Contains(systemNamespaces, n.Name) }

// Account is the account billed for the namespace's calls, "" if unset.
func (n Namespace) Account() string { return n.value(KeyAccount) }

// Project is the project the namespace's token is scoped to: the
// tollgate.dev/project annotation or label, else the namespace name.
func (n Namespace) Project() string {
	if p := n.value(KeyProject); p != "" {
		return p
	}
	return n.Name
}

// value reads key from the annotations, then the labels: annotations allow
// any value, labels are what people reach for first.
func (n Namespace) value(key string) string {
	if v := strings.TrimSpace(n.Annotations[key]); v != "" {
		return v
	}
	return strings.TrimSpace(n.Labels[key])
}

// DefinedEnv returns the names the operator declared as set at namespace
// level (AnnotationDefinedEnv).
func (n Namespace) DefinedEnv() []string { return splitList(n.Annotations[AnnotationDefinedEnv]) }

// splitList splits a comma-separated list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
