package replay

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/tollgate-dev/tollgate/pkg/catalog"
)

// shippedCassette is one row of testdata/recorded/SOURCES.md.
type shippedCassette struct {
	File         string // relative to testdata/recorded, forward slashes
	Interactions int    // entries in the row's interactions column
}

var (
	manifestOnce sync.Once
	manifest     []shippedCassette
	manifestErr  error
)

// shippedCassettes reads the files the project ships from SOURCES.md, the
// corpus manifest: in a section titled with a folder (## `dir/` — …) a
// row's file column names a file in it; elsewhere it holds the path under
// testdata/recorded. The interactions column lists one entry per recorded
// interaction, separated by ";".
func shippedCassettes(t testing.TB) []shippedCassette {
	t.Helper()
	manifestOnce.Do(func() { manifest, manifestErr = readManifest(filepath.Join(RecordedDir(), "SOURCES.md")) })
	if manifestErr != nil {
		t.Fatal(manifestErr)
	}
	if len(manifest) == 0 {
		t.Fatal("SOURCES.md lists no cassettes")
	}
	return manifest
}

var sectionFolder = regexp.MustCompile("^## `([^`]+)/`")

func readManifest(path string) ([]shippedCassette, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []shippedCassette
	folder := ""
	fileCol, interCol := -1, -1
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "## ") {
			folder, fileCol, interCol = "", -1, -1
			if m := sectionFolder.FindStringSubmatch(line); m != nil {
				folder = m[1]
			}
			continue
		}
		if !strings.HasPrefix(line, "|") {
			fileCol, interCol = -1, -1 // a table ended
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if fileCol < 0 { // the header row
			for i, c := range cells {
				switch c {
				case "file":
					fileCol = i
				case "interactions":
					interCol = i
				}
			}
			continue
		}
		if interCol < 0 || len(cells) <= max(fileCol, interCol) || strings.HasPrefix(cells[fileCol], "---") {
			continue
		}
		name := strings.Trim(cells[fileCol], "`")
		if folder != "" {
			name = folder + "/" + name
		}
		out = append(out, shippedCassette{File: name, Interactions: len(strings.Split(cells[interCol], ";"))})
	}
	return out, sc.Err()
}

// TestDerivedOverlay pins how a model only an unlisted recording names is
// priced: like the closest catalog model of its provider and kind; and
// that a name the provider answered only with "no such model" is not
// priced, so that the gateway refuses it as unknown.
func TestDerivedOverlay(t *testing.T) {
	f := getFixture(t)
	req := func(host, path, body string) Interaction {
		return Interaction{Method: "POST", Host: host, Path: path, RequestBody: []byte(body)}
	}
	answered := func(it Interaction, status int, body string) Interaction {
		it.Status, it.Body = status, []byte(body)
		return it
	}
	const notFound = `{"error":{"message":"The model does not exist","type":"invalid_request_error","param":null,"code":"model_not_found"}}`
	its := []Interaction{
		req("api.anthropic.com", "/v1/messages", `{"model":"claude-opus-7"}`),
		req("api.anthropic.com", "/v1/messages", `{"model":"claude-sonnet-4-9"}`),
		req("api.anthropic.com", "/v1/messages", `{"model":"claude-sonnet-4-9"}`), // once
		req("generativelanguage.googleapis.com", "/v1beta/models/gemini-1.0-flash:generateContent", `{}`),
		req("api.openai.com", "/v1/embeddings", `{"model":"text-embedding-9"}`),
		req("api.openai.com", "/v1/chat/completions", `{"model":"gpt-4o"}`),             // in the catalog
		req("api.openai.com", "/v1/files", `{"model":"gpt-9"}`),                         // refused by path
		req("api.anthropic.com", "/v1/messages", `{"model":"claude-x","speed":"fast"}`), // refused by body

		// The provider says these do not exist: 404s, and OpenAI
		// Responses' 400 model_not_found.
		answered(req("api.openai.com", "/v1/embeddings", `{"model":"no-such-embedding"}`), 404, notFound),
		answered(req("api.openai.com", "/v1/responses", `{"model":"gpt-nope"}`), 400, notFound),
		answered(req("api.openai.com", "/v1/responses", `{"model":"gpt-nope"}`), 400, notFound),
		answered(req("api.anthropic.com", "/v1/messages", `{"model":"claude-gone"}`), 404,
			`{"type":"error","error":{"type":"not_found_error","message":"model: claude-gone"}}`),
		answered(req("generativelanguage.googleapis.com", "/v1beta/models/gemini-nope:generateContent", `{}`), 404,
			`{"error":{"code":404,"message":"models/gemini-nope is not found","status":"NOT_FOUND"}}`),
		// Not those: it answered once, and another error is no verdict.
		answered(req("api.openai.com", "/v1/chat/completions", `{"model":"gpt-4o-flaky"}`), 404, notFound),
		answered(req("api.openai.com", "/v1/chat/completions", `{"model":"gpt-4o-flaky"}`), 200, `{}`),
		answered(req("api.openai.com", "/v1/chat/completions", `{"model":"gpt-4o-rude"}`), 400,
			`{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}}`),
	}
	def, err := catalog.Default()
	if err != nil {
		t.Fatal(err)
	}
	y, names, unknown := derivedOverlay(def, f.base, its)
	want := []string{
		"anthropic/claude-opus-7 like claude-opus-4-5-20251101",
		"anthropic/claude-sonnet-4-9 like claude-sonnet-4-5-20250929",
		"gemini/gemini-1.0-flash like gemini-2.0-flash",
		"openai/text-embedding-9 like text-embedding-4-ultra",
		"anthropic/claude-x like claude-sonnet-4-5-20250929",
		"openai/gpt-4o-flaky like gpt-4o-mini",
		"openai/gpt-4o-rude like gpt-4o-mini",
	}
	if strings.Join(names, "\n") != strings.Join(want, "\n") {
		t.Errorf("derived:\n%s\nwant:\n%s", strings.Join(names, "\n"), strings.Join(want, "\n"))
	}
	wantUnknown := []string{"openai/no-such-embedding", "openai/gpt-nope", "anthropic/claude-gone", "gemini/gemini-nope"}
	if !slices.Equal(unknown, wantUnknown) {
		t.Errorf("left unknown %v, want %v", unknown, wantUnknown)
	}
	if _, err := catalog.Load(f.base, []byte(y)); err != nil {
		t.Errorf("derived overlay does not load: %v\n%s", err, y)
	}
}
