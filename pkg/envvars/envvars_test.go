package envvars

import (
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const (
	testBase = "http://127.0.0.1:15080"
	testKey  = "tg_test_key"
)

// planned returns the names Plan would set for a user environment.
func planned(cfg Config, environ ...string) []string {
	var names []string
	for _, v := range Plan(cfg, FromEnviron(environ)) {
		names = append(names, v.Name)
	}
	return names
}

var (
	gateway   = []string{"AI_GATEWAY_KEY", "AI_GATEWAY_BASE_URL"}
	openai    = []string{"OPENAI_API_KEY", "OPENAI_BASE_URL"}
	anthropic = []string{"ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"}
	gemini    = []string{"GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL"}
)

func join(groups ...[]string) []string { return slices.Concat(groups...) }

func TestPlanRules(t *testing.T) {
	cfg := Config{BaseURL: testBase, Key: testKey}
	tests := []struct {
		name    string
		environ []string
		want    []string
	}{
		{"nothing defined", nil, join(gateway, openai, anthropic, gemini)},
		{"unrelated variables", []string{"PATH=/bin", "HOME=/root", "OPENAI_ORG_ID=org"}, join(gateway, openai, anthropic, gemini)},

		{"OPENAI_API_KEY only", []string{"OPENAI_API_KEY=sk-user"}, join(gateway, anthropic, gemini)},
		{"OPENAI_BASE_URL only", []string{"OPENAI_BASE_URL=https://proxy.example/v1"}, join(gateway, anthropic, gemini)},
		{"OpenAI pair", []string{"OPENAI_API_KEY=sk", "OPENAI_BASE_URL=https://x/v1"}, join(gateway, anthropic, gemini)},

		{"ANTHROPIC_API_KEY only", []string{"ANTHROPIC_API_KEY=sk-ant"}, join(gateway, openai, gemini)},
		{"ANTHROPIC_BASE_URL only", []string{"ANTHROPIC_BASE_URL=https://x"}, join(gateway, openai, gemini)},
		{"ANTHROPIC_AUTH_TOKEN does not block", []string{"ANTHROPIC_AUTH_TOKEN=t"}, join(gateway, openai, anthropic, gemini)},

		{"GEMINI_API_KEY only", []string{"GEMINI_API_KEY=g"}, join(gateway, openai, anthropic)},
		{"GOOGLE_GEMINI_BASE_URL only", []string{"GOOGLE_GEMINI_BASE_URL=https://x"}, join(gateway, openai, anthropic)},
		{"GOOGLE_API_KEY blocks Gemini", []string{"GOOGLE_API_KEY=g"}, join(gateway, openai, anthropic)},
		{"GOOGLE_VERTEX_BASE_URL blocks Gemini", []string{"GOOGLE_VERTEX_BASE_URL=https://x"}, join(gateway, openai, anthropic)},
		{"GOOGLE_GENAI_USE_VERTEXAI does not block", []string{"GOOGLE_GENAI_USE_VERTEXAI=true"}, join(gateway, openai, anthropic, gemini)},

		{"OpenAI and Gemini defined", []string{"OPENAI_BASE_URL=x", "GOOGLE_API_KEY=g"}, join(gateway, anthropic)},
		{"every provider defined", []string{"OPENAI_API_KEY=a", "ANTHROPIC_BASE_URL=b", "GEMINI_API_KEY=c"}, gateway},

		{"AI_GATEWAY_KEY defined", []string{"AI_GATEWAY_KEY=mine"}, join(openai, anthropic, gemini)},
		{"AI_GATEWAY_BASE_URL defined", []string{"AI_GATEWAY_BASE_URL=http://mine"}, join(openai, anthropic, gemini)},
		{"everything defined", []string{"AI_GATEWAY_KEY=", "OPENAI_API_KEY=", "ANTHROPIC_API_KEY=", "GOOGLE_VERTEX_BASE_URL="}, nil},

		{"empty OPENAI_API_KEY counts as defined", []string{"OPENAI_API_KEY="}, join(gateway, anthropic, gemini)},
		{"empty GOOGLE_API_KEY counts as defined", []string{"GOOGLE_API_KEY="}, join(gateway, openai, anthropic)},
		{"empty AI_GATEWAY_BASE_URL counts as defined", []string{"AI_GATEWAY_BASE_URL="}, join(openai, anthropic, gemini)},

		{"names are case-sensitive", []string{"openai_api_key=x"}, join(gateway, openai, anthropic, gemini)},
		{"entry without '=' is ignored", []string{"OPENAI_API_KEY"}, join(gateway, openai, anthropic, gemini)},
		{"value containing '='", []string{"ANTHROPIC_API_KEY=a=b"}, join(gateway, openai, gemini)},
		{"prefix of a name is not the name", []string{"OPENAI_API_KEY_2=x", "OPENAI=x"}, join(gateway, openai, anthropic, gemini)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := planned(cfg, tt.environ...); !slices.Equal(got, tt.want) {
				t.Errorf("Plan with %q:\n got %q\nwant %q", tt.environ, got, tt.want)
			}
			// KeptBy names every provider Plan leaves out, and only those,
			// each with the defined names that keep it.
			set := map[string]bool{}
			for _, v := range Plan(cfg, FromEnviron(tt.environ)) {
				set[v.Provider] = true
			}
			kept := map[string]bool{}
			for _, k := range KeptBy(cfg, FromEnviron(tt.environ)) {
				kept[k.Provider] = true
				for _, n := range k.Names {
					if !slices.ContainsFunc(tt.environ, func(kv string) bool { return strings.HasPrefix(kv, n+"=") }) {
						t.Errorf("KeptBy names %s for %s, which %q does not define", n, k.Provider, tt.environ)
					}
				}
				if len(k.Names) == 0 {
					t.Errorf("KeptBy keeps %s for no name", k.Provider)
				}
			}
			for _, p := range []string{ProviderGateway, ProviderOpenAI, ProviderAnthropic, ProviderGemini} {
				if set[p] == kept[p] {
					t.Errorf("%s: planned %v, kept %v; want exactly one", p, set[p], kept[p])
				}
			}
		})
	}
}

func TestPlanValues(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []Var
	}{
		{
			name: "defaults",
			cfg:  Config{BaseURL: testBase, Key: testKey},
			want: []Var{
				{Name: "AI_GATEWAY_KEY", Value: testKey, Provider: "gateway", Secret: true},
				{Name: "AI_GATEWAY_BASE_URL", Value: testBase, Provider: "gateway"},
				{Name: "OPENAI_API_KEY", Value: testKey, Provider: "openai", Secret: true},
				{Name: "OPENAI_BASE_URL", Value: testBase + "/openai/v1", Provider: "openai"},
				{Name: "ANTHROPIC_API_KEY", Value: testKey, Provider: "anthropic", Secret: true},
				{Name: "ANTHROPIC_BASE_URL", Value: testBase + "/anthropic", Provider: "anthropic"},
				{Name: "GEMINI_API_KEY", Value: testKey, Provider: "gemini", Secret: true},
				{Name: "GOOGLE_GEMINI_BASE_URL", Value: testBase + "/gemini", Provider: "gemini"},
			},
		},
		{
			name: "trailing slash and path prefix",
			cfg:  Config{BaseURL: "https://gw.example/tollgate/", Key: "k"},
			want: []Var{
				{Name: "AI_GATEWAY_KEY", Value: "k", Provider: "gateway", Secret: true},
				{Name: "AI_GATEWAY_BASE_URL", Value: "https://gw.example/tollgate", Provider: "gateway"},
				{Name: "OPENAI_API_KEY", Value: "k", Provider: "openai", Secret: true},
				{Name: "OPENAI_BASE_URL", Value: "https://gw.example/tollgate/openai/v1", Provider: "openai"},
				{Name: "ANTHROPIC_API_KEY", Value: "k", Provider: "anthropic", Secret: true},
				{Name: "ANTHROPIC_BASE_URL", Value: "https://gw.example/tollgate/anthropic", Provider: "anthropic"},
				{Name: "GEMINI_API_KEY", Value: "k", Provider: "gemini", Secret: true},
				{Name: "GOOGLE_GEMINI_BASE_URL", Value: "https://gw.example/tollgate/gemini", Provider: "gemini"},
			},
		},
		{
			name: "names only: key from a Secret",
			cfg:  Config{BaseURL: testBase},
			want: []Var{
				{Name: "AI_GATEWAY_KEY", Provider: "gateway", Secret: true},
				{Name: "AI_GATEWAY_BASE_URL", Value: testBase, Provider: "gateway"},
				{Name: "OPENAI_API_KEY", Provider: "openai", Secret: true},
				{Name: "OPENAI_BASE_URL", Value: testBase + "/openai/v1", Provider: "openai"},
				{Name: "ANTHROPIC_API_KEY", Provider: "anthropic", Secret: true},
				{Name: "ANTHROPIC_BASE_URL", Value: testBase + "/anthropic", Provider: "anthropic"},
				{Name: "GEMINI_API_KEY", Provider: "gemini", Secret: true},
				{Name: "GOOGLE_GEMINI_BASE_URL", Value: testBase + "/gemini", Provider: "gemini"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Plan(tt.cfg, func(string) bool { return false })
			if !slices.Equal(got, tt.want) {
				t.Errorf("Plan:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestPlanCustomNames(t *testing.T) {
	cfg := Config{BaseURL: testBase, Key: testKey, Names: Names{
		GatewayKey:     "NETLIFY_AI_GATEWAY_KEY",
		GatewayBaseURL: "NETLIFY_AI_GATEWAY_BASE_URL",
	}}
	custom := []string{"NETLIFY_AI_GATEWAY_KEY", "NETLIFY_AI_GATEWAY_BASE_URL"}
	tests := []struct {
		name    string
		cfg     Config
		environ []string
		want    []string
	}{
		{"custom names used", cfg, nil, join(custom, openai, anthropic, gemini)},
		{"default names no longer block", cfg, []string{"AI_GATEWAY_KEY=x", "AI_GATEWAY_BASE_URL=y"}, join(custom, openai, anthropic, gemini)},
		{"custom key blocks", cfg, []string{"NETLIFY_AI_GATEWAY_KEY=x"}, join(openai, anthropic, gemini)},
		{"custom base URL blocks", cfg, []string{"NETLIFY_AI_GATEWAY_BASE_URL="}, join(openai, anthropic, gemini)},
		{
			"one custom name, one default",
			Config{BaseURL: testBase, Names: Names{GatewayKey: "MY_KEY"}},
			nil,
			join([]string{"MY_KEY", "AI_GATEWAY_BASE_URL"}, openai, anthropic, gemini),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := planned(tt.cfg, tt.environ...); !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestPlanProvidersIndependent checks every subset of blocked providers: the
// decision for one never depends on another's variables.
func TestPlanProvidersIndependent(t *testing.T) {
	blockers := []struct {
		provider string
		env      string
	}{
		{"gateway", "AI_GATEWAY_KEY=x"},
		{"openai", "OPENAI_BASE_URL=x"},
		{"anthropic", "ANTHROPIC_API_KEY=x"},
		{"gemini", "GOOGLE_VERTEX_BASE_URL=x"},
	}
	for mask := range 1 << len(blockers) {
		var environ []string
		blocked := map[string]bool{}
		for i, b := range blockers {
			if mask&(1<<i) != 0 {
				environ = append(environ, b.env)
				blocked[b.provider] = true
			}
		}
		got := map[string]int{}
		for _, v := range Plan(Config{BaseURL: testBase, Key: testKey}, FromEnviron(environ)) {
			got[v.Provider]++
		}
		for _, b := range blockers {
			want := 2
			if blocked[b.provider] {
				want = 0
			}
			if got[b.provider] != want {
				t.Errorf("environ %q: %s has %d vars, want %d", environ, b.provider, got[b.provider], want)
			}
		}
	}
}

// TestPlanAsksOnlyRelevantNames guards the predicate contract an injector
// relies on: Plan only asks about the names that decide something.
func TestPlanAsksOnlyRelevantNames(t *testing.T) {
	var asked []string
	Plan(Config{BaseURL: testBase}, func(name string) bool {
		asked = append(asked, name)
		return false
	})
	slices.Sort(asked)
	want := []string{
		"AI_GATEWAY_BASE_URL", "AI_GATEWAY_KEY",
		"ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
		"GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL", "GOOGLE_VERTEX_BASE_URL",
		"OPENAI_API_KEY", "OPENAI_BASE_URL",
	}
	if !slices.Equal(asked, want) {
		t.Errorf("asked %q, want %q", asked, want)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"ok", Config{BaseURL: testBase}, ""},
		{"https with path", Config{BaseURL: "https://gw.example/t/"}, ""},
		{"empty base URL", Config{}, "absolute http"},
		{"relative base URL", Config{BaseURL: "/openai"}, "absolute http"},
		{"other scheme", Config{BaseURL: "unix:///run/gw.sock"}, "absolute http"},
		{"query", Config{BaseURL: testBase + "?a=b"}, "query"},
		{"bad name", Config{BaseURL: testBase, Names: Names{GatewayKey: "AI KEY"}}, "variable name"},
		{"injection in name", Config{BaseURL: testBase, Names: Names{GatewayBaseURL: "X;rm"}}, "variable name"},
		{"leading digit", Config{BaseURL: testBase, Names: Names{GatewayKey: "1KEY"}}, "variable name"},
		{"same names", Config{BaseURL: testBase, Names: Names{GatewayKey: "K", GatewayBaseURL: "K"}}, "share"},
		// A gateway name that is a provider's variable escapes that
		// provider's rule: OPENAI_BASE_URL as the gateway's base URL would
		// be set next to a user's own OPENAI_API_KEY and send that key to
		// the gateway.
		{"gateway base URL is OpenAI's", Config{BaseURL: testBase, Names: Names{GatewayBaseURL: OpenAIBaseURL}}, "provider variable"},
		{"gateway key is Gemini's", Config{BaseURL: testBase, Names: Names{GatewayKey: GeminiAPIKey}}, "provider variable"},
		{"gateway key is Google's", Config{BaseURL: testBase, Names: Names{GatewayKey: GoogleAPIKey}}, "provider variable"},
		{"gateway base URL is Vertex's", Config{BaseURL: testBase, Names: Names{GatewayBaseURL: GoogleVertexBaseURL}}, "provider variable"},
		{"netlify names", Config{BaseURL: testBase, Names: Names{GatewayKey: "NETLIFY_AI_GATEWAY_KEY", GatewayBaseURL: "NETLIFY_AI_GATEWAY_BASE_URL"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestApply(t *testing.T) {
	tests := []struct {
		name    string
		environ []string
		vars    []Var
		want    []string
	}{
		{"append", []string{"PATH=/bin"}, []Var{{Name: "A", Value: "1"}, {Name: "B", Value: ""}}, []string{"PATH=/bin", "A=1", "B="}},
		{"replace every occurrence", []string{"A=old", "PATH=/bin", "A=older"}, []Var{{Name: "A", Value: "new"}}, []string{"PATH=/bin", "A=new"}},
		{"last var wins", nil, []Var{{Name: "A", Value: "1"}, {Name: "B", Value: "2"}, {Name: "A", Value: "3"}}, []string{"A=3", "B=2"}},
		{"nothing to apply", []string{"PATH=/bin"}, nil, []string{"PATH=/bin"}},
		{"odd entries kept", []string{"=C:=C:\\", "NOEQUALS"}, []Var{{Name: "A", Value: "1"}}, []string{"=C:=C:\\", "NOEQUALS", "A=1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := slices.Clone(tt.environ)
			got := Apply(tt.environ, tt.vars)
			if !slices.Equal(got, tt.want) {
				t.Errorf("Apply = %q, want %q", got, tt.want)
			}
			if !slices.Equal(tt.environ, orig) {
				t.Errorf("Apply modified its input: %q, was %q", tt.environ, orig)
			}
		})
	}
}

// TestPlanApplyRoundTrip checks that applying a plan never changes a variable
// the user defined, and that planning again afterwards sets nothing more.
func TestPlanApplyRoundTrip(t *testing.T) {
	user := []string{"OPENAI_API_KEY=", "GOOGLE_API_KEY=g", "HOME=/h"}
	cfg := Config{BaseURL: testBase, Key: testKey}
	env := Apply(user, Plan(cfg, FromEnviron(user)))
	for _, kv := range user {
		if !slices.Contains(env, kv) {
			t.Errorf("user entry %q lost or changed: %q", kv, env)
		}
	}
	if again := Plan(cfg, FromEnviron(env)); len(again) != 0 {
		t.Errorf("second Plan = %+v, want nothing", again)
	}
}

func TestExports(t *testing.T) {
	tests := []struct {
		name string
		vars []Var
		want string
	}{
		{"none", nil, ""},
		{"plain", []Var{{Name: "A", Value: "http://x/openai/v1"}}, "export A='http://x/openai/v1'\n"},
		{"empty", []Var{{Name: "A"}}, "export A=''\n"},
		{"single quote", []Var{{Name: "A", Value: "it's"}}, `export A='it'\''s'` + "\n"},
		{"only quotes", []Var{{Name: "A", Value: "''"}}, `export A=''\'''\'''` + "\n"},
		{"shell syntax stays literal", []Var{{Name: "A", Value: "$HOME `id` $(id) \\ \" ;"}}, "export A='$HOME `id` $(id) \\ \" ;'\n"},
		{"newline", []Var{{Name: "A", Value: "a\nb"}}, "export A='a\nb'\n"},
		{"two", []Var{{Name: "A", Value: "1"}, {Name: "B", Value: "2"}}, "export A='1'\nexport B='2'\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Exports(tt.vars); got != tt.want {
				t.Errorf("Exports = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestExportsShell evaluates Exports output in a real POSIX shell and reads
// the values back, so the quoting is checked by the thing that parses it.
func TestExportsShell(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh in PATH")
	}
	vars := []Var{
		{Name: "A", Value: "it's a 'test'"},
		{Name: "B", Value: "$HOME `echo pwned` $(echo pwned) \\n \"q\""},
		{Name: "C", Value: ""},
		{Name: "D", Value: "line1\nline2"},
	}
	script := Exports(vars) + `printf '%s\0' "$A" "$B" "$C" "$D"`
	out, err := exec.Command(sh, "-c", script).Output()
	if err != nil {
		t.Fatalf("sh: %v", err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	for i, v := range vars {
		if i >= len(got) || got[i] != v.Value {
			t.Errorf("%s read back as %q, want %q (all: %q)", v.Name, got, v.Value, got)
		}
	}
}

func TestJSON(t *testing.T) {
	tests := []struct {
		name string
		vars []Var
		want string
	}{
		{"none", nil, `{}`},
		{"order kept", []Var{{Name: "Z", Value: "1"}, {Name: "A", Value: "2"}}, `{"Z":"1","A":"2"}`},
		{"escaping", []Var{{Name: "A", Value: "\"q\"\n<&>"}}, `{"A":"\"q\"\n\u003c\u0026\u003e"}`},
		{"repeated name keeps last value", []Var{{Name: "A", Value: "1"}, {Name: "B", Value: "2"}, {Name: "A", Value: "3"}}, `{"A":"3","B":"2"}`},
		{"value equal to name", []Var{{Name: "A", Value: "A"}}, `{"A":"A"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := JSON(tt.vars)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("JSON = %s, want %s", got, tt.want)
			}
			if !json.Valid(got) {
				t.Errorf("JSON output is not valid JSON: %s", got)
			}
		})
	}
}

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{
		"A": true, "_": true, "AI_GATEWAY_KEY": true, "a1": true,
		"": false, "1A": false, "A-B": false, "A B": false, "A=B": false, "É": false, "A;B": false,
	} {
		if got := ValidName(name); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", name, got, want)
		}
	}
}
