package tollgatev1_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// buf is the pinned buf CLI, fetched through the Go module proxy; the
// Makefile's proto target names the same one.
const buf = "github.com/bufbuild/buf/cmd/buf@v1.75.0"

// protoDir holds buf.yaml and buf.gen.yaml.
const protoDir = "../.."

func runBuf(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("go", append([]string{"run", buf}, args...)...)
	cmd.Dir = protoDir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("buf %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return out
}

// TestGeneratedCodeIsCurrent regenerates the Go code into a temporary
// directory and compares it with the committed files, so a .proto edit
// without `make proto` (or a hand edit of generated code) fails here.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	out := t.TempDir()
	runBuf(t, "generate", "-o", out)

	fresh, err := filepath.Glob(filepath.Join(out, "tollgate", "v1", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	committed, err := filepath.Glob("*.pb.go")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range fresh {
		names = append(names, filepath.Base(f))
	}
	slices.Sort(names)
	slices.Sort(committed)
	if !slices.Equal(names, committed) {
		t.Fatalf("generated files %v, committed %v: run `make proto` and commit the result", names, committed)
	}
	for _, name := range names {
		want, err := os.ReadFile(filepath.Join(out, "tollgate", "v1", name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run `make proto` and commit the result", name)
		}
	}
}

// TestProtoLintAndFormat holds the API to buf's STANDARD lint rules and its
// formatting.
func TestProtoLintAndFormat(t *testing.T) {
	runBuf(t, "lint")
	if diff := runBuf(t, "format", "--diff"); len(diff) > 0 {
		t.Errorf("proto files are not buf-formatted (run `go run %s format -w proto`):\n%s", buf, diff)
	}
}

// TestMakefilePinsSameBuf keeps `make proto` and this test on one buf.
func TestMakefilePinsSameBuf(t *testing.T) {
	mk, err := os.ReadFile(filepath.Join(protoDir, "..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^BUF\s*\?=\s*(\S+)`).FindSubmatch(mk)
	if m == nil || string(m[1]) != buf {
		t.Errorf("Makefile BUF = %q, want %q", m, buf)
	}
}
