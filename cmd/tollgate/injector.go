package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"
)

// injectorBinary holds the commands that build what runs in the cluster
// beside the gateway (the injector, the sidecar's Envoy config). They are
// kept out of tollgate because client-go, the Kubernetes types and Envoy's
// config protos would more than double the gateway's code and its resident
// memory with it (see cmd/tollgate-injector).
const injectorBinary = "tollgate-injector"

// newInjectCmd is `tollgate inject ARGS…`: `tollgate-injector ARGS…`.
func newInjectCmd() *cobra.Command {
	return injectorCmd("inject -f FILE | inject serve",
		"Add the tollgate-proxy sidecar and the provider variables to workloads in YAML, or run the injector (serve)")
}

// newSidecarCmd is `tollgate sidecar ARGS…`: `tollgate-injector sidecar ARGS…`.
func newSidecarCmd() *cobra.Command {
	return injectorCmd("sidecar bootstrap", "The Envoy sidecar that fronts a workload's provider calls", "sidecar")
}

// injectorCmd hands its arguments, after sub, to tollgate-injector the way
// git runs git-NAME: in the same process (exec), so its exit code, signals
// and standard streams are the caller's, and the chart's `inject serve`
// works as the container's command.
func injectorCmd(use, short string, sub ...string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short + " (runs " + injectorBinary + ")",
		// Every flag, --help included, is the injector's.
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			self, err := os.Executable()
			if err != nil {
				self = ""
			}
			path, err := findInjector(self, exec.LookPath)
			if err != nil {
				return err
			}
			argv := append(append([]string{path}, sub...), args...)
			return syscall.Exec(path, argv, os.Environ())
		},
	}
}

// findInjector looks for tollgate-injector beside the running tollgate
// (an install or a build puts both in one directory), then on PATH.
func findInjector(self string, lookPath func(string) (string, error)) (string, error) {
	if self != "" {
		p := filepath.Join(filepath.Dir(self), injectorBinary)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	p, err := lookPath(injectorBinary)
	if err == nil {
		return p, nil
	}
	if !errors.Is(err, exec.ErrNotFound) && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%s: %w", injectorBinary, err)
	}
	return "", fmt.Errorf("`tollgate inject` and `tollgate sidecar` run %s, which is neither beside %s nor on PATH: build both with `make build`, or `go install github.com/tollgate-dev/tollgate/cmd/%s`",
		injectorBinary, self, injectorBinary)
}
