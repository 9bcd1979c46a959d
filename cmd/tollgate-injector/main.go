// Command tollgate-injector builds what runs in the cluster beside the
// gateway: it adds the tollgate-proxy sidecar and the provider variables to
// workloads, offline to YAML (-f) or as the mutating admission webhook and
// gateway-token controller (serve), and prints the sidecar's Envoy config
// (sidecar bootstrap). `tollgate inject` and `tollgate sidecar` run it.
//
// It is a binary of its own because client-go, the Kubernetes API types and
// Envoy's config protos are most of an executable's code, and the gateway,
// which needs none of them, would carry them in its resident memory.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newInjectCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "tollgate inject:", err)
		os.Exit(1)
	}
}
