// Command tollgate is the Tollgate AI gateway: the production processor
// (serve), the local development gateway (dev, env), mock providers (mock),
// and the admin tools (token, models, usage).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

func main() {
	ctx, release := notifyStop(context.Background())
	err := newRoot().ExecuteContext(ctx)
	release()
	var ee exitError
	switch {
	case errors.As(err, &ee):
		if ee.err != nil {
			fmt.Fprintln(os.Stderr, "tollgate:", ee.err)
		}
		os.Exit(ee.code)
	case err != nil:
		fmt.Fprintln(os.Stderr, "tollgate:", err)
		os.Exit(1)
	}
}

// exitError carries a child process's exit code out of `tollgate dev -- CMD`,
// and with err, why CMD could not be started (printed before exiting).
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string {
	if e.err != nil {
		return e.err.Error()
	}
	return fmt.Sprintf("exit status %d", e.code)
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "tollgate",
		Short:         "An AI gateway: official OpenAI, Anthropic and Gemini SDKs with no keys of their own, every token metered",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(flagError)
	root.AddCommand(
		newDevCmd(),
		newEnvCmd(),
		newServeCmd(),
		newMockCmd(),
		newModelsCmd(),
		newUsageCmd(),
		newTokenCmd(),
		newAccountCmd(),
		newProjectCmd(),
		newSidecarCmd(),
		newInjectCmd(),
	)
	return root
}

// flagError says how to pass an argument that starts with '-' (a token id,
// say): cobra reads it as an unknown flag unless it follows "--". Every
// subcommand inherits it from the root.
func flagError(cmd *cobra.Command, err error) error {
	if strings.HasPrefix(err.Error(), "unknown flag") || strings.HasPrefix(err.Error(), "unknown shorthand flag") {
		return fmt.Errorf("%w (an argument that starts with '-' goes after \"--\": %s [flags] -- ARG)", err, cmd.CommandPath())
	}
	return err
}
