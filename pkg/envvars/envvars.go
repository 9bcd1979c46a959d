// Package envvars decides which environment variables point the official
// OpenAI, Anthropic and Gemini SDKs at the gateway, without ever overriding a
// variable the user defined.
//
// One implementation serves both `tollgate dev` (a local process environment)
// and the Kubernetes injector (a container's env, envFrom and namespace
// defaults). The two know very different things about what "the user defined",
// so [Plan] takes that knowledge as a predicate instead of reading
// [os.Environ] itself; [FromEnviron] builds the predicate for a process.
//
// # What "defined" means
//
// A name is defined when it is present, even with an empty value. The SDKs
// disagree about empty values: the JS SDKs trim and treat "" as unset, the Go
// SDKs use [os.LookupEnv] and apply a set-but-empty value. Treating empty as
// defined is the choice that never overrides an explicit user setting: a user
// who writes OPENAI_API_KEY= has said something about OpenAI, and filling in the
// gateway's key behind their back would be the surprise this package exists to
// prevent. The cost is that such a user gets no OpenAI variables from us.
//
// # The rules
//
// Each provider is decided on its own; a user's OPENAI_API_KEY leaves OpenAI
// alone and still gets Anthropic and Gemini set up.
//
//   - OPENAI_API_KEY and OPENAI_BASE_URL, unless either is defined.
//   - ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL, unless either is defined.
//   - GEMINI_API_KEY and GOOGLE_GEMINI_BASE_URL, unless either is defined, or
//     GOOGLE_API_KEY (which the Gemini SDKs prefer over GEMINI_API_KEY) or
//     GOOGLE_VERTEX_BASE_URL (the user is on Vertex) is defined.
//   - The gateway's own pair (AI_GATEWAY_KEY and AI_GATEWAY_BASE_URL by
//     default) always, unless the user defined either of those two.
//
// Pairs are all or nothing: setting only the base URL next to a user's own
// key would send the user's real provider key to the gateway, and setting
// only the key would send the gateway token to the provider.
package envvars

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
)

// Provider values of [Var.Provider].
const (
	ProviderGateway   = "gateway"
	ProviderOpenAI    = "openai"
	ProviderAnthropic = "anthropic"
	ProviderGemini    = "gemini"
)

// Variable names read by the official SDKs (see shared/docs/providers.md).
const (
	OpenAIAPIKey          = "OPENAI_API_KEY"
	OpenAIBaseURL         = "OPENAI_BASE_URL"
	AnthropicAPIKey       = "ANTHROPIC_API_KEY"
	AnthropicBaseURL      = "ANTHROPIC_BASE_URL"
	GeminiAPIKey          = "GEMINI_API_KEY"
	GoogleGeminiBaseURL   = "GOOGLE_GEMINI_BASE_URL"
	GoogleAPIKey          = "GOOGLE_API_KEY"
	GoogleVertexBaseURL   = "GOOGLE_VERTEX_BASE_URL"
	DefaultGatewayKey     = "AI_GATEWAY_KEY"
	DefaultGatewayBaseURL = "AI_GATEWAY_BASE_URL"
)

// Base paths under the gateway root, one per provider so that the gateway can
// tell providers apart by path alone (current Anthropic SDKs authenticate with
// a Bearer token, exactly like OpenAI). The OpenAI SDKs expect /v1 in the
// base URL; the Anthropic and Gemini SDKs add their own version segment.
const (
	OpenAIPath    = "/openai/v1"
	AnthropicPath = "/anthropic"
	GeminiPath    = "/gemini"
)

// Names are the names of the gateway's own pair of variables. They are
// configurable because the hosted product this mirrors calls them
// NETLIFY_AI_GATEWAY_KEY and NETLIFY_AI_GATEWAY_BASE_URL, and code written
// against it should keep working.
type Names struct {
	GatewayKey     string // default AI_GATEWAY_KEY
	GatewayBaseURL string // default AI_GATEWAY_BASE_URL
}

// withDefaults fills empty names with the defaults.
func (n Names) withDefaults() Names {
	if n.GatewayKey == "" {
		n.GatewayKey = DefaultGatewayKey
	}
	if n.GatewayBaseURL == "" {
		n.GatewayBaseURL = DefaultGatewayBaseURL
	}
	return n
}

// Config is what the variables point at.
type Config struct {
	// BaseURL is the gateway root, e.g. http://127.0.0.1:15080. A trailing
	// slash is ignored.
	BaseURL string
	// Key is the gateway token. Leave it empty when the value must not pass
	// through this package (the injector references a Secret instead): the key
	// variables are then still planned, with Secret set and an empty Value.
	Key string
	// Names are the gateway pair's names; zero fields take the defaults.
	Names Names
}

// Validate reports whether c can be planned and rendered safely: BaseURL is an
// absolute http(s) URL without query or fragment, and the names are portable
// shell identifiers (so that [Exports] output is safe to eval).
func (c Config) Validate() error {
	u, err := url.Parse(c.BaseURL)
	if err != nil {
		return fmt.Errorf("envvars: base URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("envvars: base URL %q: want an absolute http or https URL", c.BaseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("envvars: base URL %q: must not have a query or fragment", c.BaseURL)
	}
	n := c.Names.withDefaults()
	for _, name := range []string{n.GatewayKey, n.GatewayBaseURL} {
		if !ValidName(name) {
			return fmt.Errorf("envvars: variable name %q: want letters, digits and underscores, not starting with a digit", name)
		}
	}
	if n.GatewayKey == n.GatewayBaseURL {
		return fmt.Errorf("envvars: gateway key and base URL share the name %q", n.GatewayKey)
	}
	// The gateway pair is decided by its own two names only: under a
	// provider's name it would escape that provider's rule (e.g. set
	// OPENAI_BASE_URL next to a user's own OPENAI_API_KEY).
	for _, name := range []string{n.GatewayKey, n.GatewayBaseURL} {
		for _, p := range providerNames {
			if name == p {
				return fmt.Errorf("envvars: gateway variable name %q is a provider variable the SDKs read", name)
			}
		}
	}
	return nil
}

// providerNames are the provider variables [Plan] decides on.
var providerNames = []string{
	OpenAIAPIKey, OpenAIBaseURL, AnthropicAPIKey, AnthropicBaseURL,
	GeminiAPIKey, GoogleGeminiBaseURL, GoogleAPIKey, GoogleVertexBaseURL,
}

// Var is one variable to set.
type Var struct {
	Name     string `json:"name"`
	Value    string `json:"value"`
	Provider string `json:"provider"` // one of the Provider constants
	// Secret marks the gateway token, which an injector delivers through a
	// Secret reference rather than a literal value and which must never be
	// logged.
	Secret bool `json:"secret,omitempty"`
}

// Plan returns the variables to set, given which names the user already
// defined, in a fixed order: gateway, OpenAI, Anthropic, Gemini, each pair
// key first. defined must report true for a name that is present at all, even
// with an empty value (see the package documentation); an injector that cannot
// tell (a Secret envFrom it may not read) decides by its own policy whether
// "unknown" answers true (leave the provider alone) or false.
//
// Plan does not validate cfg; call [Config.Validate] once where the
// configuration is loaded.
func Plan(cfg Config, defined func(name string) bool) []Var {
	base := strings.TrimRight(cfg.BaseURL, "/")
	vars := make([]Var, 0, 8)
	for _, p := range cfg.pairs() {
		if len(p.definedOf(defined)) > 0 {
			continue
		}
		vars = append(vars,
			Var{Name: p.key, Value: cfg.Key, Provider: p.provider, Secret: true},
			Var{Name: p.baseURL, Value: base + p.path, Provider: p.provider})
	}
	return vars
}

// Kept is a provider whose pair [Plan] leaves unset, and the names the user
// defined that keep it so.
type Kept struct {
	Provider string
	Names    []string
}

// KeptBy returns, in [Plan]'s order, the providers whose pair Plan leaves
// unset given defined, each with the defined names that keep it so: what a
// tool says to a user whose variables (from an earlier gateway, say) win.
func KeptBy(cfg Config, defined func(name string) bool) []Kept {
	var out []Kept
	for _, p := range cfg.pairs() {
		if names := p.definedOf(defined); len(names) > 0 {
			out = append(out, Kept{Provider: p.provider, Names: names})
		}
	}
	return out
}

// pair is one provider's two variables, and the names whose definition
// keeps both unset: the rules of the package documentation.
type pair struct {
	provider, key, baseURL, path string
	blockers                     []string
}

// pairs are cfg's pairs in Plan's order.
func (cfg Config) pairs() []pair {
	n := cfg.Names.withDefaults()
	return []pair{
		{ProviderGateway, n.GatewayKey, n.GatewayBaseURL, "", []string{n.GatewayKey, n.GatewayBaseURL}},
		{ProviderOpenAI, OpenAIAPIKey, OpenAIBaseURL, OpenAIPath, []string{OpenAIAPIKey, OpenAIBaseURL}},
		{ProviderAnthropic, AnthropicAPIKey, AnthropicBaseURL, AnthropicPath, []string{AnthropicAPIKey, AnthropicBaseURL}},
		{ProviderGemini, GeminiAPIKey, GoogleGeminiBaseURL, GeminiPath, []string{GeminiAPIKey, GoogleGeminiBaseURL, GoogleAPIKey, GoogleVertexBaseURL}},
	}
}

// definedOf returns the names of p.blockers that defined reports.
func (p pair) definedOf(defined func(name string) bool) []string {
	var names []string
	for _, n := range p.blockers {
		if defined(n) {
			names = append(names, n)
		}
	}
	return names
}

// FromEnviron returns a predicate reporting whether a name is present in
// environ, a list of "NAME=value" entries as from [os.Environ]. An entry with
// an empty value counts as present. Names compare exactly, as on Linux and in
// Kubernetes; Windows treats names case-insensitively, which this does not
// model.
func FromEnviron(environ []string) func(name string) bool {
	set := make(map[string]bool, len(environ))
	for _, kv := range environ {
		if name, _, ok := strings.Cut(kv, "="); ok && name != "" {
			set[name] = true
		}
	}
	return func(name string) bool { return set[name] }
}

// Apply returns a copy of environ with vars set. A var whose name is already in
// environ replaces that entry (every occurrence), so the result has no
// duplicates for those names; deciding what must not be replaced is [Plan]'s
// job. environ is not modified.
func Apply(environ []string, vars []Var) []string {
	last := make(map[string]string, len(vars))
	for _, v := range vars {
		last[v.Name] = v.Value // a later var wins, as in a shell
	}
	out := make([]string, 0, len(environ)+len(vars))
	for _, kv := range environ {
		if name, _, ok := strings.Cut(kv, "="); ok {
			if _, replaced := last[name]; replaced {
				continue
			}
		}
		out = append(out, kv)
	}
	for _, v := range vars {
		if value, ok := last[v.Name]; ok {
			out = append(out, v.Name+"="+value)
			delete(last, v.Name)
		}
	}
	return out
}

// Exports renders vars as POSIX shell lines, export NAME='value', one per var,
// for `eval "$(tollgate env)"`. Values are single-quoted, so nothing in them is
// expanded; a single quote inside is written as '\”. Names are written as
// they are: validate them with [Config.Validate] or [ValidName] first.
func Exports(vars []Var) string {
	var b strings.Builder
	for _, v := range vars {
		b.WriteString("export ")
		b.WriteString(v.Name)
		b.WriteString("=")
		b.WriteString(shellQuote(v.Value))
		b.WriteString("\n")
	}
	return b.String()
}

// shellQuote single-quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// JSON renders vars as one JSON object mapping names to values, in the order
// of vars (gateway first for a [Plan] result), for tools that read a
// dotenv-like map rather than shell. A repeated name keeps its last value, at
// its first position.
func JSON(vars []Var) ([]byte, error) {
	last := make(map[string]string, len(vars))
	for _, v := range vars {
		last[v.Name] = v.Value
	}
	var b bytes.Buffer
	b.WriteByte('{')
	for _, v := range vars {
		value, ok := last[v.Name]
		if !ok {
			continue
		}
		delete(last, v.Name)
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		name, err := json.Marshal(v.Name)
		if err != nil {
			return nil, fmt.Errorf("envvars: encoding name %q: %w", v.Name, err)
		}
		enc, err := json.Marshal(value)
		if err != nil {
			return nil, fmt.Errorf("envvars: encoding value of %s: %w", v.Name, err)
		}
		b.Write(name)
		b.WriteByte(':')
		b.Write(enc)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// ValidName reports whether name is a portable environment variable name:
// ASCII letters, digits and underscores, not starting with a digit.
func ValidName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '_', 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
