package main

import (
	"bytes"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes/fake"

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
