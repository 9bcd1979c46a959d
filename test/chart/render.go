// Package chart renders charts/tollgate with the Helm Go SDK, the way
// `helm install --dry-run` does (schema validation, template `fail`s, hooks
// and NOTES included), and decodes the result strictly into Kubernetes
// types. The chart tests and the real-API-server tests in test/kube share it.
package chart

import (
	"bytes"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/releaseutil"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// Release and namespace every render uses unless told otherwise.
const (
	ReleaseName = "tg"
	Namespace   = "tollgate-system"
)

// KubeVersion is the cluster version renders assume: the one test/kube runs.
var KubeVersion = chartutil.KubeVersion{Version: "v1.37.2", Major: "1", Minor: "37"}

// Dir is the chart's directory.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "charts", "tollgate")
}

// Object is one rendered manifest: its source template, its raw YAML and
// the typed object it strictly decodes into.
type Object struct {
	Template string
	GVK      schema.GroupVersionKind
	Name     string
	YAML     []byte
	Typed    any
	Hook     bool
}

// Rendered is a whole install: the objects (hooks included, marked) and
// the NOTES text.
type Rendered struct {
	Release *release.Release
	Objects []Object
	Notes   string
}

// Render installs the chart client-side (dry run) with vals layered over
// values.yaml, as `helm install tg charts/tollgate -n tollgate-system
// --dry-run` would, and decodes every object strictly.
func Render(vals map[string]any) (*Rendered, error) {
	return RenderAs(ReleaseName, Namespace, vals)
}

// RenderAs is Render for another release name and namespace.
func RenderAs(releaseName, namespace string, vals map[string]any) (*Rendered, error) {
	ch, err := loader.Load(Dir())
	if err != nil {
		return nil, fmt.Errorf("load chart: %w", err)
	}
	inst := action.NewInstall(&action.Configuration{})
	inst.ClientOnly = true
	inst.DryRun = true
	inst.ReleaseName = releaseName
	inst.Namespace = namespace
	inst.KubeVersion = &KubeVersion
	inst.DisableOpenAPIValidation = true
	rel, err := inst.Run(ch, vals)
	if err != nil {
		return nil, err
	}
	r := &Rendered{Release: rel, Notes: rel.Info.Notes}
	add := func(source, manifest string, hook bool) error {
		o, err := Decode(source, []byte(manifest))
		if err != nil {
			return err
		}
		if o != nil {
			o.Hook = hook
			r.Objects = append(r.Objects, *o)
		}
		return nil
	}
	for _, m := range releaseutil.SplitManifests(rel.Manifest) {
		source := ""
		if line, _, ok := strings.Cut(m, "\n"); ok {
			source = strings.TrimPrefix(line, "# Source: ")
		}
		if err := add(source, m, false); err != nil {
			return nil, err
		}
	}
	for _, h := range rel.Hooks {
		if err := add(h.Path, h.Manifest, true); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Decode strictly decodes one YAML manifest into its Go type: an unknown
// or duplicated field is an error. Kubernetes kinds come from client-go's
// scheme; the cert-manager kinds the chart uses from this package. It
// returns nil for an empty document.
func Decode(source string, manifest []byte) (*Object, error) {
	if len(bytes.TrimSpace(stripComments(manifest))) == 0 {
		return nil, nil
	}
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(manifest, &meta); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	gvk := schema.FromAPIVersionAndKind(meta.APIVersion, meta.Kind)
	typed, err := newTyped(gvk)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	if err := yaml.UnmarshalStrict(manifest, typed); err != nil {
		return nil, fmt.Errorf("%s: %s %s: %w", source, meta.Kind, meta.Metadata.Name, err)
	}
	return &Object{Template: source, GVK: gvk, Name: meta.Metadata.Name, YAML: manifest, Typed: typed}, nil
}

func newTyped(gvk schema.GroupVersionKind) (any, error) {
	if gvk.Group == "cert-manager.io" {
		switch gvk.Kind {
		case "Certificate":
			return &Certificate{}, nil
		case "Issuer":
			return &Issuer{}, nil
		}
	}
	obj, err := scheme.Scheme.New(gvk)
	if err != nil {
		return nil, fmt.Errorf("no Go type for %s: %w", gvk, err)
	}
	return obj, nil
}

func stripComments(b []byte) []byte {
	var out [][]byte
	for line := range bytes.Lines(b) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(out, line)
		}
	}
	return bytes.Join(out, nil)
}

// Find returns the objects of kind (and name, when not empty).
func (r *Rendered) Find(kind, name string) []Object {
	var out []Object
	for _, o := range r.Objects {
		if o.GVK.Kind == kind && (name == "" || o.Name == name) {
			out = append(out, o)
		}
	}
	return out
}

// One returns the single object of kind (and name), typed as T.
func One[T any](r *Rendered, kind, name string) (T, error) {
	var zero T
	found := r.Find(kind, name)
	if len(found) != 1 {
		names := make([]string, 0, len(found))
		for _, o := range found {
			names = append(names, o.Name)
		}
		return zero, fmt.Errorf("want one %s %q, found %d %v", kind, name, len(found), names)
	}
	t, ok := found[0].Typed.(T)
	if !ok {
		return zero, fmt.Errorf("%s %q is %T", kind, name, found[0].Typed)
	}
	return t, nil
}

// Kinds lists the kinds rendered, sorted, one entry per object.
func (r *Rendered) Kinds() []string {
	var k []string
	for _, o := range r.Objects {
		k = append(k, o.GVK.Kind)
	}
	slices.Sort(k)
	return k
}
