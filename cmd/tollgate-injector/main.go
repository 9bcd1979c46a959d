// Command tollgate-injector adds the tollgate-proxy sidecar and the provider
// variables to workloads: offline to YAML (-f), or as the cluster's mutating
// admission webhook and gateway-token controller (serve). `tollgate inject`
// runs it.
//
// It is a binary of its own because client-go and the Kubernetes API types
// more than double an executable's code, and the gateway, which never talks
// to the API server, would carry them in its resident memory.
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
