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

// injectorBinary is the injector's executable: the Kubernetes client lives
// there so that the gateway does not carry it (see cmd/tollgate-injector).
const injectorBinary = "tollgate-injector"

// newInjectCmd hands `tollgate inject ARGS…` to tollgate-injector, the way
// git runs git-NAME: the same process (exec), so its exit code, signals and
// standard streams are the caller's, and the chart's `inject serve` works
// as the container's command.
func newInjectCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "inject -f FILE | inject serve",
		Short: "Add the tollgate-proxy sidecar and the provider variables to workloads in YAML, or run the injector (serve); runs " + injectorBinary,
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
			return syscall.Exec(path, append([]string{path}, args...), os.Environ())
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
	return "", fmt.Errorf("`tollgate inject` runs %s, which is neither beside %s nor on PATH: build both with `make build`, or `go install github.com/tollgate-dev/tollgate/cmd/%s`",
		injectorBinary, self, injectorBinary)
}
