package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tollgate-dev/tollgate/sidecar"
)

func newSidecarCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sidecar",
		Short: "The Envoy sidecar that fronts a workload's provider calls",
	}
	cmd.AddCommand(newSidecarBootstrapCmd())
	return cmd
}

func newSidecarBootstrapCmd() *cobra.Command {
	var (
		o      sidecar.Options
		format string
	)
	cmd := &cobra.Command{
		Use:   "bootstrap",
		Short: "Print the sidecar's Envoy bootstrap (validated) as YAML or JSON",
		Long: `Prints the Envoy bootstrap of the sidecar: a loopback listener for the app's SDKs,
routes /openai/, /anthropic/ and /gemini/ to the providers over TLS, and the ext_proc
filter that sends every request to the Tollgate processor (fail closed: with the
processor down, nothing reaches a provider). The config is checked before it is
printed.`,
		Example: `  tollgate sidecar bootstrap > envoy.yaml
  tollgate sidecar bootstrap --processor unix:///run/tollgate/processor.sock --format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := sidecar.Bootstrap(o)
			if err != nil {
				return err
			}
			if err := sidecar.Validate(b); err != nil {
				return fmt.Errorf("the bootstrap does not validate: %w", err)
			}
			out, err := sidecar.Render(b, format)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Processor, "processor", sidecar.DefaultProcessor, "processor gRPC address: host:port, /path.sock or unix:///path.sock")
	f.Uint32Var(&o.ListenPort, "port", sidecar.DefaultListenPort, "loopback port the app's SDKs call")
	f.Uint32Var(&o.AdminPort, "admin-port", sidecar.DefaultAdminPort, "Envoy admin port (loopback only)")
	f.Uint32Var(&o.HealthPort, "health-port", sidecar.DefaultHealthPort, "port serving "+sidecar.ReadyPath+" for probes")
	f.DurationVar(&o.MessageTimeout, "message-timeout", sidecar.DefaultMessageTimeout, "longest wait for each processor reply")
	f.Uint32Var(&o.MaxRequests, "max-requests", sidecar.DefaultMaxRequests, "requests in flight per cluster before Envoy's circuit breaker answers 503")
	f.BoolVar(&o.ExtAuthz, "ext-authz", false, "add the ext_authz filter (token check in a separate header-only hop)")
	f.StringVar(&o.TrustedCA, "trusted-ca", sidecar.DefaultTrustedCA, "CA bundle that verifies the providers")
	f.StringVar(&format, "format", "yaml", "yaml or json")
	return cmd
}
