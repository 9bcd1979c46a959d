package injector

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// templatePaths says where each workload kind keeps its pod template, as
// JSON pointer tokens ("" for a bare Pod).
var templatePaths = map[string][]string{
	"v1/Pod":                   nil,
	"apps/v1/Deployment":       {"spec", "template"},
	"apps/v1/StatefulSet":      {"spec", "template"},
	"apps/v1/DaemonSet":        {"spec", "template"},
	"apps/v1/ReplicaSet":       {"spec", "template"},
	"batch/v1/Job":             {"spec", "template"},
	"batch/v1/CronJob":         {"spec", "jobTemplate", "spec", "template"},
	"v1/ReplicationController": {"spec", "template"},
}

// ManifestResult says what happened to one workload of a manifest.
type ManifestResult struct {
	Kind, Name string
	Injected   bool
	Reason     string // why not, when not injected
}

// InjectManifests reads Kubernetes objects from multi-document YAML (or
// JSON) and writes them with every workload's pod template mutated as the
// webhook would, with Manual set: asking is the opt-in. ns stands in for
// the namespace of objects that name none or name it (its labels and
// annotations apply to all). Documents that need no change are written
// exactly as read, comments included, so the output of a run goes through
// a second run unchanged. Other kinds pass through.
func (m *Mutator) InjectManifests(ctx context.Context, r io.Reader, w io.Writer, ns Namespace) ([]ManifestResult, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var results []ManifestResult
	first := true
	for i := 1; ; i++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return results, nil
		}
		if err != nil {
			return results, fmt.Errorf("document %d: %w", i, err)
		}
		if isBlank(doc) {
			continue
		}
		out, res, err := m.injectDocument(ctx, doc, ns)
		if err != nil {
			return results, fmt.Errorf("document %d: %w", i, err)
		}
		if res != nil {
			results = append(results, *res)
		}
		if !first {
			if _, err := io.WriteString(w, "---\n"); err != nil {
				return results, err
			}
		}
		first = false
		if _, err := w.Write(out); err != nil {
			return results, err
		}
	}
}

// isBlank reports whether a YAML document holds only comments and space.
func isBlank(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") && l != "---" {
			return false
		}
	}
	return true
}

// injectDocument returns doc, injected if it is a workload. res is nil for
// other kinds.
func (m *Mutator) injectDocument(ctx context.Context, doc []byte, ns Namespace) ([]byte, *ManifestResult, error) {
	raw, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return nil, nil, err
	}
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, nil, errors.New("not a Kubernetes object")
	}
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	path, ok := templatePaths[apiVersion+"/"+kind]
	if !ok {
		return withNewline(doc), nil, nil
	}
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	res := &ManifestResult{Kind: kind, Name: name}
	if objNS, _ := meta["namespace"].(string); ns.Name == "" {
		ns.Name = objNS
	}

	// The pod template, with a metadata object present so that the patch
	// has a parent for the annotations (a template may omit metadata).
	tpl := obj
	for _, p := range path {
		next, ok := tpl[p].(map[string]any)
		if !ok {
			return nil, nil, fmt.Errorf("%s %q has no %s", kind, name, strings.Join(path, "."))
		}
		tpl = next
	}
	if _, ok := tpl["metadata"].(map[string]any); !ok {
		tpl["metadata"] = map[string]any{}
	}
	tplJSON, err := json.Marshal(tpl)
	if err != nil {
		return nil, nil, err
	}
	var pod corev1.Pod
	if err := json.Unmarshal(tplJSON, &pod); err != nil {
		return nil, nil, fmt.Errorf("%s %q: pod template: %w", kind, name, err)
	}
	if pod.Namespace == "" {
		pod.Namespace = ns.Name
	}
	out := m.Mutate(ctx, Request{Pod: &pod, Namespace: ns, Manual: true})
	res.Injected, res.Reason = out.Injected, out.Reason
	ops, err := CreatePatch(&pod, out.Pod)
	if err != nil {
		return nil, nil, err
	}
	if len(ops) == 0 {
		return withNewline(doc), res, nil
	}
	prefix := ""
	for _, p := range path {
		prefix += "/" + EscapePointer(p)
	}
	for i := range ops {
		ops[i].Path = prefix + ops[i].Path
	}
	patchJSON, err := json.Marshal(ops)
	if err != nil {
		return nil, nil, err
	}
	patch, err := jsonpatch.DecodePatch(patchJSON)
	if err != nil {
		return nil, nil, err
	}
	whole, err := json.Marshal(obj) // with the metadata parent added
	if err != nil {
		return nil, nil, err
	}
	patched, err := patch.Apply(whole)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %q: applying the injection: %w", kind, name, err)
	}
	y, err := yaml.JSONToYAML(patched)
	if err != nil {
		return nil, nil, err
	}
	return y, res, nil
}

func withNewline(b []byte) []byte {
	b = bytes.TrimLeft(b, "\n")
	if len(b) > 0 && b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	return b
}
