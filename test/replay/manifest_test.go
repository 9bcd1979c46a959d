package replay

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
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
