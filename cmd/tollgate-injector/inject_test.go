package main

import (
	"bytes"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes/fake"

	"sigs.k8s.io/yaml"

	"github.com/tollgate-dev/tollgate/injector"
)

func TestDetectSidecarMode(t *testing.T) {
	tests := []struct{ major, minor, want string }{
		{"1", "28", injector.SidecarContainer},
		{"1", "29", injector.SidecarNative},
		{"1", "33+", injector.SidecarNative}, // managed clusters add a "+"
		{"1", "37", injector.SidecarNative},
		{"2", "0", injector.SidecarNative},
	}
	for _, tt := range tests {
		client := fake.NewClientset()
		client.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &version.Info{Major: tt.major, Minor: tt.minor}
		got, err := detectSidecarMode(client)
		if err != nil || got != tt.want {
			t.Errorf("%s.%s: got %q, %v; want %q", tt.major, tt.minor, got, err, tt.want)
		}
	}
}

// TestInjectCommand runs `tollgate inject -f -` as a user would: stdin in,
// injected YAML out, a note on stderr for what was left alone, and its own
// output unchanged by a second run.
func TestInjectCommand(t *testing.T) {
	in := `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx}]
---
apiVersion: v1
kind: Pod
metadata: {name: out, annotations: {tollgate.dev/inject: "false"}}
spec: {containers: [{name: c, image: busybox}]}
`
	run := func(stdin string, args ...string) (string, string, error) {
		root := newInjectCmd()
		var out, errOut bytes.Buffer
		root.SetIn(strings.NewReader(stdin))
		root.SetOut(&out)
		root.SetErr(&errOut)
		root.SetArgs(args)
		err := root.Execute()
		return out.String(), errOut.String(), err
	}
	args := []string{"-f", "-", "--namespace-labels", "tollgate.dev/account=acme", "--sidecar-mode", "container"}
	out, stderr, err := run(in, args...)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "tollgate.dev/status: injected") || !strings.Contains(out, "name: tollgate-proxy") ||
		!strings.Contains(out, "secretKeyRef") || strings.Contains(out, "restartPolicy: Always") {
		t.Errorf("output not injected in container mode:\n%s", out)
	}
	if stderr != "pod/out: not injected: pod opted out\n" {
		t.Errorf("stderr %q", stderr)
	}
	again, _, err := run(out, args...)
	if err != nil || again != out {
		t.Errorf("second run changed the output (err %v):\n%s", err, again)
	}

	for _, bad := range [][]string{
		{},
		{"-f", "-", "--sidecar-mode", "sometimes"},
		{"-f", "-", "--namespace-labels", "novalue"},
		{"-f", "/nonexistent.yaml"},
	} {
		if _, _, err := run(in, bad...); err == nil {
			t.Errorf("tollgate inject %s: no error", strings.Join(bad, " "))
		}
	}
}

// TestInjectProxyResources: --proxy-resources and --proxy-image-pull-policy
// (the chart's injector.sidecar.resources and .image.pullPolicy) reach the
// proxy container; bad values are refused before anything is injected.
func TestInjectProxyResources(t *testing.T) {
	in := "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: app, image: busybox}]}\n"
	tests := []struct {
		name    string
		args    []string
		want    corev1.ResourceRequirements
		policy  corev1.PullPolicy
		wantErr bool
	}{
		{"defaults", nil, injector.DefaultProxyResources(), "", false},
		{"set", []string{"--proxy-resources", `{"requests":{"cpu":"100m","memory":"128Mi"},"limits":{"memory":"1Gi"}}`, "--proxy-image-pull-policy", "Always"},
			corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
			}, corev1.PullAlways, false},
		{"yaml and numbers", []string{"--proxy-resources", "requests: {cpu: 0.5}\nlimits: {cpu: 1}"},
			corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m")},
				Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")},
			}, "", false},
		{"request above limit", []string{"--proxy-resources", `{"requests":{"memory":"1Gi"},"limits":{"memory":"256Mi"}}`}, corev1.ResourceRequirements{}, "", true},
		{"not a quantity", []string{"--proxy-resources", `{"requests":{"cpu":"lots"}}`}, corev1.ResourceRequirements{}, "", true},
		{"unknown field", []string{"--proxy-resources", `{"request":{"cpu":"1"}}`}, corev1.ResourceRequirements{}, "", true},
		{"bad pull policy", []string{"--proxy-image-pull-policy", "Sometimes"}, corev1.ResourceRequirements{}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := newInjectCmd()
			var out bytes.Buffer
			root.SetIn(strings.NewReader(in))
			root.SetOut(&out)
			root.SetErr(&bytes.Buffer{})
			root.SetArgs(append([]string{"-f", "-", "--namespace-labels", "tollgate.dev/account=acme"}, tt.args...))
			err := root.Execute()
			if tt.wantErr {
				if err == nil {
					t.Fatalf("no error; output:\n%s", out.String())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var pod corev1.Pod
			if err := yaml.Unmarshal(out.Bytes(), &pod); err != nil {
				t.Fatal(err)
			}
			if len(pod.Spec.InitContainers) == 0 || pod.Spec.InitContainers[0].Name != injector.ProxyName {
				t.Fatalf("no proxy:\n%s", out.String())
			}
			proxy := pod.Spec.InitContainers[0]
			if !equality.Semantic.DeepEqual(proxy.Resources, tt.want) {
				t.Errorf("proxy resources %+v, want %+v", proxy.Resources, tt.want)
			}
			if proxy.ImagePullPolicy != tt.policy {
				t.Errorf("proxy imagePullPolicy %q, want %q", proxy.ImagePullPolicy, tt.policy)
			}
		})
	}
}
