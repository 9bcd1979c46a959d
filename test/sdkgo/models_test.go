package sdkgo_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"google.golang.org/genai"

	"github.com/tollgate-dev/tollgate/pkg/catalog"
	"github.com/tollgate-dev/tollgate/test/harness"
)

// TestModelListPaging: the SDKs' pagers walk the gateway's model listings
// page by page, with small pages, and see every served model once;
// Anthropic lists the newest first.
func TestModelListPaging(t *testing.T) {
	dev := harness.StartDev(t, "--mock")
	for k, v := range dev.Env(t) {
		t.Setenv(k, v)
	}
	cat, err := catalog.Default()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	served := func(p catalog.Provider) map[string]bool {
		m := map[string]bool{}
		for _, model := range cat.Models(p) {
			m[model.Name] = true
		}
		return m
	}

	t.Run("anthropic", func(t *testing.T) {
		client := anthropic.NewClient()
		want := served(catalog.Anthropic)
		first, err := client.Models.List(ctx, anthropic.ModelListParams{Limit: anthropic.Int(2)})
		if err != nil {
			t.Fatal(err)
		}
		if len(first.Data) != 2 || !first.HasMore {
			t.Fatalf("first page of 2: %d models, has_more %v", len(first.Data), first.HasMore)
		}
		seen := map[string]bool{}
		var last time.Time
		pager := client.Models.ListAutoPaging(ctx, anthropic.ModelListParams{Limit: anthropic.Int(2)})
		for pager.Next() {
			m := pager.Current()
			if seen[m.ID] || !want[m.ID] {
				t.Errorf("model %q listed twice or not served", m.ID)
			}
			if !last.IsZero() && m.CreatedAt.After(last) {
				t.Errorf("%s (%s) listed after an older model: want newest first", m.ID, m.CreatedAt)
			}
			seen[m.ID], last = true, m.CreatedAt
		}
		if err := pager.Err(); err != nil {
			t.Fatal(err)
		}
		if len(seen) != len(want) {
			t.Errorf("paged through %d models, the catalog serves %d", len(seen), len(want))
		}
		// Back from the last page with before_id.
		back, err := client.Models.List(ctx, anthropic.ModelListParams{Limit: anthropic.Int(3), BeforeID: anthropic.String(first.Data[1].ID)})
		if err != nil {
			t.Fatal(err)
		}
		if len(back.Data) != 1 || back.Data[0].ID != first.Data[0].ID || back.HasMore {
			t.Errorf("before the second model: %d models, has_more %v", len(back.Data), back.HasMore)
		}
	})

	t.Run("gemini", func(t *testing.T) {
		client, err := genai.NewClient(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := served(catalog.Gemini)
		page, err := client.Models.List(ctx, &genai.ListModelsConfig{PageSize: 2})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		pages := 0
		for ; err == nil; page, err = page.Next(ctx) {
			pages++
			if len(page.Items) > 2 {
				t.Errorf("page %d has %d models, asked for 2", pages, len(page.Items))
			}
			for _, m := range page.Items {
				name := m.Name[len("models/"):]
				if seen[name] || !want[name] {
					t.Errorf("model %q listed twice or not served", m.Name)
				}
				seen[name] = true
			}
		}
		if !errors.Is(err, genai.ErrPageDone) {
			t.Fatal(err)
		}
		if len(seen) != len(want) || pages != (len(want)+1)/2 {
			t.Errorf("paged through %d models in %d pages, the catalog serves %d", len(seen), pages, len(want))
		}
	})
}
