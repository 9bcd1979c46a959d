package sdknode

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/test/harness"
)

// nodeTimeout bounds one run of the scenarios (about two seconds normally).
const nodeTimeout = 3 * time.Minute

// sdkSet is one install of the three Node SDKs and the node that runs the
// scenarios against it.
type sdkSet struct {
	name string
	dir  string // relative to the repo root; holds node_modules and scenarios.mjs
	// node is the command that runs a script with dir's packages.
	node []string
}

// sdkSets are the SDKs a user gets today: the versions that run on this
// machine's Node 20 (test/node), and the newest majors on the Node 22 they
// require, installed from npm (test/node-latest). Its scenarios.mjs is a
// symlink to test/node's; the preserve-symlinks flags make its imports
// resolve in test/node-latest's node_modules.
var sdkSets = []sdkSet{
	{name: "node20", dir: "test/node", node: []string{"node"}},
	{name: "latest", dir: "test/node-latest", node: []string{"test/node-latest/node_modules/node/bin/node", "--preserve-symlinks", "--preserve-symlinks-main"}},
}

// script is the command line that runs the scenarios, from the repo root.
func (s sdkSet) script() []string {
	cmd := append(slices.Clone(s.node), s.dir+"/scenarios.mjs")
	if strings.Contains(cmd[0], "/") {
		cmd[0] = filepath.Join(harness.RepoRoot(), cmd[0])
	}
	return cmd
}

func requireScenarioDeps(t testing.TB, s sdkSet) {
	t.Helper()
	requireNode(t)
	requireNodeModules(t, s.dir, "openai", "@anthropic-ai/sdk", "@google/genai")
	if bin := s.script()[0]; filepath.IsAbs(bin) {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s is missing (%v): `make node-deps` installs it, through the npm package node's install script, which npm must be allowed to run", bin, err)
		}
	}
}

// checkInstall fails unless every scenario ran on set's own openai package:
// a symlinked script whose imports resolved elsewhere would test the other
// install twice.
func checkInstall(t *testing.T, set sdkSet, lines []scenarioLine) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(harness.RepoRoot(), set.dir, "node_modules", "openai", "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	var pkg struct{ Version string }
	if err := json.Unmarshal(raw, &pkg); err != nil || pkg.Version == "" {
		t.Fatalf("%s/node_modules/openai/package.json: version %q, %v", set.dir, pkg.Version, err)
	}
	for _, l := range lines {
		if l.OpenAIVersion != pkg.Version {
			t.Fatalf("%s ran on openai %q, want %s's %s", l.key(), l.OpenAIVersion, set.dir, pkg.Version)
		}
	}
}

// TestDevRunsNodeScenarios is what a user types: `tollgate dev --mock -- node
// scenarios.mjs`. The gateway sets the SDK variables, runs the script, exits
// with its code, and leaves one usage record per SDK call in the ledger.
func TestDevRunsNodeScenarios(t *testing.T) {
	for _, set := range sdkSets {
		t.Run(set.name, func(t *testing.T) { devRunsNodeScenarios(t, set) })
	}
}

func devRunsNodeScenarios(t *testing.T, set sdkSet) {
	requireScenarioDeps(t, set)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), nodeTimeout)
	defer cancel()
	args := append([]string{"dev", "--mock", "--listen", "127.0.0.1:0", "--data-dir", dir, "--catalog", catalogFile(t), "--"}, set.script()...)
	cmd := exec.CommandContext(ctx, harness.Binary(t), args...)
	cmd.Dir = harness.RepoRoot()
	cmd.Env = harness.CleanEnv()
	ownProcessGroup(cmd)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("tollgate dev -- %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(set.script(), " "), err, stdout.String(), stderr.String())
	}
	if s := stderr.String(); strings.TrimSpace(s) != "" {
		t.Logf("stderr of tollgate dev and the script:\n%s", s)
	}
	lines := parseScenarios(t, stdout.Bytes())
	checkInstall(t, set, lines)
	checkOutcomes(t, lines)

	// The dev process has exited: the ledger is complete and closed.
	recs := harness.UsageIn(t, dir)
	checkLedger(t, lines, recs)
}

// TestNodeScenariosGroundTruth runs the same script against a running
// gateway through each front door (tollgate dev, and the Envoy sidecar path
// into tollgate serve), with the env a workload gets, and compares the
// ledger with what the mock providers received and would bill.
func TestNodeScenariosGroundTruth(t *testing.T) {
	for _, set := range sdkSets {
		for _, door := range harness.Doors {
			t.Run(set.name+"/"+door, func(t *testing.T) { nodeScenariosGroundTruth(t, set, door) })
		}
	}
}

func nodeScenariosGroundTruth(t *testing.T, set sdkSet, door string) {
	requireScenarioDeps(t, set)
	dev := harness.StartDoor(t, door, harness.DoorOptions{Catalog: catalogFile(t)})
	env := dev.Env(t)
	for _, k := range []string{"OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL"} {
		if env[k] == "" {
			t.Fatalf("tollgate env sets no %s", k)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), nodeTimeout)
	defer cancel()
	script := set.script()
	cmd := exec.CommandContext(ctx, script[0], script[1:]...)
	cmd.WaitDelay = 10 * time.Second
	cmd.Dir = harness.RepoRoot()
	cmd.Env = harness.CleanEnv()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s\ngateway:\n%s", strings.Join(script, " "), err, stdout.String(), stderr.String(), dev.Stderr())
	}
	if s := stderr.String(); strings.TrimSpace(s) != "" {
		t.Logf("stderr of the script:\n%s", s)
	}
	checkSecrets(t, stdout.Bytes(), dev.GatewayToken())
	checkSecrets(t, stderr.Bytes(), dev.GatewayToken())
	lines := parseScenarios(t, stdout.Bytes())
	checkInstall(t, set, lines)
	checkOutcomes(t, lines)

	recs := dev.WaitUsage(t, len(lines))
	byKey := checkLedger(t, lines, recs)
	served := dev.Served(t)

	upstream := 0
	for _, l := range lines {
		exp := scenarios[l.key()]
		var hits []harness.Served
		for _, s := range served {
			if bytes.Contains(s.Body, []byte(l.Marker)) || exp.rejected && s.Model == exp.model {
				hits = append(hits, s)
			}
		}
		if exp.rejected {
			if len(hits) != 0 {
				t.Errorf("%s: the gateway refused %s but the mock received %d request(s) for it", l.key(), exp.model, len(hits))
			}
			continue
		}
		upstream++
		if len(hits) != 1 {
			t.Errorf("%s: the mock received %d requests with marker %s, want 1", l.key(), len(hits), l.Marker)
			continue
		}
		s := hits[0]
		if exp.account != "" {
			// Upstream answered an error about the operator's account:
			// the error status, or a stream cut by its error event.
			if s.Provider != l.Provider || s.Endpoint != exp.endpoint || s.Model != exp.model || s.Status != exp.httpStatus || s.MidstreamError != exp.stream {
				t.Errorf("%s: mock served %s %s %s status %d midstream_error=%v, want %s %s %s %d midstream_error=%v",
					l.key(), s.Provider, s.Endpoint, s.Model, s.Status, s.MidstreamError, l.Provider, exp.endpoint, exp.model, exp.httpStatus, exp.stream)
			}
			continue
		}
		if s.Provider != l.Provider || s.Endpoint != exp.endpoint || s.Model != exp.model || s.Stream != exp.stream || s.Status != 200 {
			t.Errorf("%s: mock served %s %s %s stream=%v status %d, want %s %s %s stream=%v 200",
				l.key(), s.Provider, s.Endpoint, s.Model, s.Stream, s.Status, l.Provider, exp.endpoint, exp.model, exp.stream)
		}
		if s.Aborted || s.MidstreamError {
			t.Errorf("%s: mock record aborted=%v midstream_error=%v", l.key(), s.Aborted, s.MidstreamError)
		}
		if (l.Scenario == "tool" || l.Scenario == "thinking_stream") != s.ToolCall {
			t.Errorf("%s: mock tool_call=%v", l.key(), s.ToolCall)
		}
		// The gateway asks OpenAI chat streams for usage itself, so only
		// Gemini embeddings go without usage on the wire.
		if s.NoUsageOnWire != exp.estimated {
			t.Errorf("%s: mock no_usage_on_wire=%v, want %v (native usage %s)", l.key(), s.NoUsageOnWire, exp.estimated, s.Native)
		}
		for name, vals := range s.Header {
			for _, v := range vals {
				if strings.Contains(v, dev.GatewayToken()) {
					t.Errorf("%s: the gateway token reached the provider in header %s", l.key(), name)
				}
			}
		}
		if bytes.Contains(s.Body, []byte(dev.GatewayToken())) {
			t.Errorf("%s: the gateway token reached the provider in the body", l.key())
		}
		rec, ok := byKey[l.key()]
		if !ok {
			continue
		}
		switch {
		case exp.estimated:
			// No usage on the wire: the gateway's estimate stands in for
			// what the provider bills; it cannot be exact.
			t.Logf("%s: ledger estimate %d input tokens, provider ground truth %d", l.key(), rec.Input, s.Usage.Input)
			if s.Usage.Input <= 0 {
				t.Errorf("%s: mock ground truth %+v", l.key(), s.Usage)
			}
		default:
			if rec.Tokens != s.Usage {
				t.Errorf("%s: ledger %+v, provider ground truth %+v (native %s)", l.key(), rec.Tokens, s.Usage, s.Native)
			}
		}
	}
	if len(served) != upstream {
		for _, s := range served {
			t.Logf("served: %s %s %s stream=%v status=%d", s.Provider, s.Endpoint, s.Model, s.Stream, s.Status)
		}
		t.Errorf("the mock received %d requests for %d forwarded SDK calls (retries or stray requests)", len(served), upstream)
	}
}

// TestDevChildExitCodeAndEnv: `tollgate dev -- CMD` exits with CMD's code,
// and CMD sees the SDK variables pointing at the gateway.
func TestDevChildExitCodeAndEnv(t *testing.T) {
	requireNode(t)
	// Print which variables are set and the base URLs; never the keys.
	const script = `
const names = ["OPENAI_API_KEY","OPENAI_BASE_URL","ANTHROPIC_API_KEY","ANTHROPIC_BASE_URL",
  "GEMINI_API_KEY","GOOGLE_GEMINI_BASE_URL","AI_GATEWAY_KEY","AI_GATEWAY_BASE_URL","GOOGLE_API_KEY"];
const set = {};
for (const n of names) set[n] = (process.env[n] ?? "") !== "";
const keys = ["OPENAI_API_KEY","ANTHROPIC_API_KEY","GEMINI_API_KEY","AI_GATEWAY_KEY"].map((k) => process.env[k]);
console.log(JSON.stringify({
  set,
  sameKey: keys.every((k) => k && k === keys[0]),
  gateway: process.env.AI_GATEWAY_BASE_URL,
  openai: process.env.OPENAI_BASE_URL,
  anthropic: process.env.ANTHROPIC_BASE_URL,
  gemini: process.env.GOOGLE_GEMINI_BASE_URL,
}));
process.exit(3);
`
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, harness.Binary(t), "dev", "--mock", "--listen", "127.0.0.1:0", "--data-dir", dir, "--", "node", "-e", script)
	cmd.Env = harness.CleanEnv()
	ownProcessGroup(cmd)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("tollgate dev -- node (exit 3): %v, want exit status 3\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	var got struct {
		Set                                map[string]bool
		SameKey                            bool
		Gateway, OpenAI, Anthropic, Gemini string
	}
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("child output %q: %v", stdout.String(), err)
	}
	if len(got.Set) != 9 {
		t.Errorf("child reported %d variables, want 9: %s", len(got.Set), stdout.String())
	}
	for name, set := range got.Set {
		if want := name != "GOOGLE_API_KEY"; set != want {
			t.Errorf("child: %s set=%v, want %v", name, set, want)
		}
	}
	if !got.SameKey {
		t.Errorf("child: the provider keys and AI_GATEWAY_KEY differ; want the one dev token")
	}
	if !strings.HasPrefix(got.Gateway, "http://127.0.0.1:") || strings.HasSuffix(got.Gateway, ":0") {
		t.Errorf("child: AI_GATEWAY_BASE_URL=%q, want the loopback address actually bound", got.Gateway)
	}
	for name, pair := range map[string][2]string{
		"OPENAI_BASE_URL":        {got.OpenAI, got.Gateway + "/openai/v1"},
		"ANTHROPIC_BASE_URL":     {got.Anthropic, got.Gateway + "/anthropic"},
		"GOOGLE_GEMINI_BASE_URL": {got.Gemini, got.Gateway + "/gemini"},
	} {
		if pair[0] != pair[1] {
			t.Errorf("child: %s=%q, want %q", name, pair[0], pair[1])
		}
	}

	// Exit code 0 propagates too, and a command that cannot start is an
	// error of tollgate itself.
	zero := exec.Command(harness.Binary(t), "dev", "--mock", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(),
		"--", "node", "-e", "process.exit(0)")
	zero.Env = harness.CleanEnv()
	zero.WaitDelay = 10 * time.Second
	if out, err := zero.CombinedOutput(); err != nil {
		t.Errorf("tollgate dev -- node (exit 0): %v\n%s", err, out)
	}
	missing := exec.Command(harness.Binary(t), "dev", "--mock", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(),
		"--", filepath.Join(t.TempDir(), "no-such-command"))
	missing.Env = harness.CleanEnv()
	if out, err := missing.CombinedOutput(); err == nil {
		t.Errorf("tollgate dev -- (missing command) exited 0\n%s", out)
	}
}
