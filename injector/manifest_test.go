package injector

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/tollgate-dev/tollgate/sidecar"
)

// realConfig is the configuration `tollgate inject` builds by default:
// the real sidecar bootstrap.
func realConfig(t testing.TB) Config {
	t.Helper()
	proxy, err := NewProxy(DefaultProxyImage, sidecar.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.Proxy = proxy
	return cfg
}

var bootstrapArg = regexp.MustCompile(`'\{"node".*\}'`)

func TestInjectManifestsGolden(t *testing.T) {
	cfg := realConfig(t)
	m, err := NewMutator(cfg, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.ReadFile(filepath.Join("testdata", "manifests", "workloads.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ns := Namespace{Labels: map[string]string{KeyAccount: "acme"}, Annotations: map[string]string{AnnotationDefinedEnv: "ANTHROPIC_API_KEY"}}
	var out bytes.Buffer
	results, err := m.InjectManifests(context.Background(), bytes.NewReader(in), &out, ns)
	if err != nil {
		t.Fatal(err)
	}
	var summary []string
	for _, r := range results {
		s := r.Kind + "/" + r.Name + ": injected"
		if !r.Injected {
			s = r.Kind + "/" + r.Name + ": " + r.Reason
		}
		summary = append(summary, s)
	}
	wantSummary := []string{
		"Pod/hello: injected",
		"Deployment/web: injected",
		"StatefulSet/db-client: injected",
		"DaemonSet/agent: hostNetwork pod: the proxy's ports would bind on the node",
		"Job/once: injected",
		"CronJob/nightly: injected",
		"CronJob/opted-out: pod opted out",
	}
	if strings.Join(summary, "\n") != strings.Join(wantSummary, "\n") {
		t.Errorf("results:\n%s\nwant:\n%s", strings.Join(summary, "\n"), strings.Join(wantSummary, "\n"))
	}

	// Every pod template decodes strictly into its kind, and each proxy
	// carries the validated bootstrap.
	docs := splitDocs(t, out.Bytes())
	if len(docs) != 8 {
		t.Fatalf("%d documents out, want 8 (the empty one dropped)", len(docs))
	}
	for _, doc := range docs {
		tpl := decodeWorkload(t, doc)
		if tpl == nil {
			continue
		}
		for _, c := range append(tpl.Spec.InitContainers, tpl.Spec.Containers...) {
			if c.Name != ProxyName {
				continue
			}
			if len(c.Args) != 2 || c.Args[0] != "--config-yaml" || c.Args[1] != string(cfg.Proxy.Bootstrap) {
				t.Errorf("proxy args are not the bootstrap: %.80q", c.Args)
				continue
			}
			b, err := sidecar.Load([]byte(c.Args[1]))
			if err != nil {
				t.Fatal(err)
			}
			if err := sidecar.Validate(b); err != nil {
				t.Errorf("injected bootstrap does not validate: %v", err)
			}
		}
	}
	if strings.Contains(out.String(), "tg1.") {
		t.Error("output carries a gateway token")
	}

	golden(t, filepath.Join("testdata", "manifests", "workloads.golden.yaml"),
		bootstrapArg.ReplaceAll(out.Bytes(), []byte("'<the sidecar bootstrap, checked above>'")))

	// Injecting the output again changes nothing, byte for byte.
	var again bytes.Buffer
	if _, err := m.InjectManifests(context.Background(), bytes.NewReader(out.Bytes()), &again, ns); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Bytes(), out.Bytes()) {
		t.Errorf("second injection changed the output:\n%s", again.Bytes())
	}
}

func TestInjectManifestsErrors(t *testing.T) {
	m, err := NewMutator(testConfig(), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]string{
		"not YAML":              "kind: [",
		"not an object":         "- a\n- b\n",
		"workload without spec": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n",
		"bad pod template":      "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: 3}\n",
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := m.InjectManifests(context.Background(), strings.NewReader(in), io.Discard, Namespace{})
			if err == nil || !strings.Contains(err.Error(), "document 1") {
				t.Errorf("got %v, want an error naming the document", err)
			}
		})
	}
}

func splitDocs(t *testing.T, b []byte) [][]byte {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var docs [][]byte
	for {
		d, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, d)
	}
}

// decodeWorkload decodes doc strictly into its Kubernetes type and returns
// its pod template (nil for other kinds).
func decodeWorkload(t *testing.T, doc []byte) *corev1.PodTemplateSpec {
	t.Helper()
	raw, err := yaml.YAMLToJSON(doc)
	if err != nil {
		t.Fatal(err)
	}
	var head struct{ Kind string }
	if err := json.Unmarshal(raw, &head); err != nil {
		t.Fatal(err)
	}
	switch head.Kind {
	case "Pod":
		var p corev1.Pod
		strictDecode(t, raw, &p)
		return &corev1.PodTemplateSpec{ObjectMeta: p.ObjectMeta, Spec: p.Spec}
	case "Deployment":
		var d appsv1.Deployment
		strictDecode(t, raw, &d)
		return &d.Spec.Template
	case "StatefulSet":
		var s appsv1.StatefulSet
		strictDecode(t, raw, &s)
		return &s.Spec.Template
	case "DaemonSet":
		var d appsv1.DaemonSet
		strictDecode(t, raw, &d)
		return &d.Spec.Template
	case "Job":
		var j batchv1.Job
		strictDecode(t, raw, &j)
		return &j.Spec.Template
	case "CronJob":
		var c batchv1.CronJob
		strictDecode(t, raw, &c)
		return &c.Spec.JobTemplate.Spec.Template
	}
	return nil
}

// FuzzInjectManifests: any input either fails with an error or gives
// output that a second run leaves byte for byte alone.
func FuzzInjectManifests(f *testing.F) {
	in, err := os.ReadFile(filepath.Join("testdata", "manifests", "workloads.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(in)
	f.Add([]byte("apiVersion: v1\nkind: Pod\nspec: {containers: [{name: a}]}\n---\n---\n"))
	f.Add([]byte("apiVersion: batch/v1\nkind: CronJob\nspec: {jobTemplate: {spec: {template: {}}}}\n"))
	m, err := NewMutator(testConfig(), nil, nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	ns := Namespace{Labels: map[string]string{KeyAccount: "acme"}}
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		if _, err := m.InjectManifests(context.Background(), bytes.NewReader(in), &out, ns); err != nil {
			return
		}
		var again bytes.Buffer
		if _, err := m.InjectManifests(context.Background(), bytes.NewReader(out.Bytes()), &again, ns); err != nil {
			t.Fatalf("our own output does not read back: %v\n%s", err, out.Bytes())
		}
		if !bytes.Equal(again.Bytes(), out.Bytes()) {
			t.Fatalf("second run changed the output:\n%s\n---- became\n%s", out.Bytes(), again.Bytes())
		}
	})
}
