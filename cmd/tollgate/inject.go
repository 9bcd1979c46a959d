package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tollgate-dev/tollgate/injector"
	"github.com/tollgate-dev/tollgate/sidecar"
)

// mutationFlags configure the pod mutation, shared by `inject -f` and
// `inject serve` so that both inject the same thing.
type mutationFlags struct {
	image, sidecarMode, tokenSecret, envFromPolicy string
	gatewayKey, gatewayBaseURL                     string
	extraSidecars                                  []string
	proxy                                          sidecar.Options
}

func (f *mutationFlags) register(fs *pflag.FlagSet, modes string) {
	fs.StringVar(&f.image, "proxy-image", injector.DefaultProxyImage, "Envoy image of the tollgate-proxy sidecar")
	fs.StringVar(&f.sidecarMode, "sidecar-mode", injector.SidecarNative, "how the proxy is added: "+modes)
	fs.StringVar(&f.tokenSecret, "token-secret", "tollgate-gateway-token", "name of the gateway-token Secret in each namespace (key \"token\")")
	fs.StringVar(&f.envFromPolicy, "env-from-policy", injector.EnvFromSkip, "when an envFrom source's keys cannot be read: skip (leave the providers it might define alone) or inject (set them anyway)")
	fs.StringVar(&f.gatewayKey, "gateway-key-name", "", "name of the gateway key variable (default AI_GATEWAY_KEY)")
	fs.StringVar(&f.gatewayBaseURL, "gateway-base-url-name", "", "name of the gateway base URL variable (default AI_GATEWAY_BASE_URL)")
	fs.StringSliceVar(&f.extraSidecars, "extra-sidecars", nil, "more container names that are never app containers (istio-proxy, linkerd-proxy, daprd, vault-agent are known)")
	fs.StringVar(&f.proxy.Processor, "processor", sidecar.DefaultProcessor, "the processor's gRPC address the sidecar calls")
	fs.Uint32Var(&f.proxy.ListenPort, "proxy-port", sidecar.DefaultListenPort, "loopback port of the sidecar the app calls")
	fs.Uint32Var(&f.proxy.AdminPort, "proxy-admin-port", sidecar.DefaultAdminPort, "Envoy admin port (loopback only)")
	fs.Uint32Var(&f.proxy.HealthPort, "proxy-health-port", sidecar.DefaultHealthPort, "port serving the sidecar's readiness to the kubelet")
	fs.BoolVar(&f.proxy.ExtAuthz, "proxy-ext-authz", false, "add the ext_authz filter to the sidecar")
}

// config builds the injector configuration; sidecarMode must already be
// native or container.
func (f *mutationFlags) config(sidecarMode, ownNamespace string) (injector.Config, error) {
	proxy, err := injector.NewProxy(f.image, f.proxy)
	if err != nil {
		return injector.Config{}, err
	}
	cfg := injector.Config{
		Proxy:         proxy,
		SidecarMode:   sidecarMode,
		TokenSecret:   f.tokenSecret,
		EnvFromPolicy: f.envFromPolicy,
		OwnNamespace:  ownNamespace,
		ExtraSidecars: f.extraSidecars,
	}
	cfg.Names.GatewayKey, cfg.Names.GatewayBaseURL = f.gatewayKey, f.gatewayBaseURL
	return cfg, cfg.Validate()
}

func newInjectCmd() *cobra.Command {
	var (
		mf                      mutationFlags
		file, namespace, nsEnv  string
		nsLabels, nsAnnotations []string
	)
	cmd := &cobra.Command{
		Use:   "inject -f FILE",
		Short: "Add the tollgate-proxy sidecar and the provider variables to workloads in YAML, or run the injector (serve)",
		Long: `Reads Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs from
multi-document YAML (- for stdin) and prints them with their pod templates injected exactly
as the admission webhook would: the sidecar, and on every app container the provider
variables unless the user defined them. Other objects pass through unchanged.

Asking is the opt-in: the namespace label is not needed, but a workload's own opt-out
(tollgate.dev/inject: "false") is honoured. --namespace-labels, --namespace-annotations
and --namespace-env stand in for the namespace (its account, project and operator-defined
variables). envFrom sources cannot be read offline: --env-from-policy decides. Output run
through inject again is unchanged.`,
		Example: `  tollgate inject -f deploy.yaml --namespace-labels tollgate.dev/account=acme | kubectl apply -f -
  kubectl get deploy web -o yaml | tollgate inject -f - --namespace-labels tollgate.dev/account=acme`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("give the manifests with -f FILE (- for stdin), or run the webhook with `tollgate inject serve`")
			}
			if mf.sidecarMode != injector.SidecarNative && mf.sidecarMode != injector.SidecarContainer {
				return fmt.Errorf("--sidecar-mode %q: want native or container", mf.sidecarMode)
			}
			cfg, err := mf.config(mf.sidecarMode, "")
			if err != nil {
				return err
			}
			m, err := injector.NewMutator(cfg, nil, nil, nil)
			if err != nil {
				return err
			}
			labels, err := parseKV(nsLabels, "--namespace-labels")
			if err != nil {
				return err
			}
			annotations, err := parseKV(nsAnnotations, "--namespace-annotations")
			if err != nil {
				return err
			}
			if nsEnv != "" {
				annotations[injector.AnnotationDefinedEnv] = nsEnv
			}
			var in io.Reader = cmd.InOrStdin()
			if file != "-" {
				f, err := os.Open(file)
				if err != nil {
					return err
				}
				defer f.Close()
				in = f
			}
			ns := injector.Namespace{Name: namespace, Labels: labels, Annotations: annotations}
			results, err := m.InjectManifests(cmd.Context(), in, cmd.OutOrStdout(), ns)
			for _, r := range results {
				if !r.Injected {
					fmt.Fprintf(cmd.ErrOrStderr(), "%s/%s: not injected: %s\n", strings.ToLower(r.Kind), r.Name, r.Reason)
				}
			}
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "filename", "f", "", "YAML or JSON manifests to inject, - for stdin")
	f.StringVarP(&namespace, "namespace", "n", "", "namespace of the objects (default: each object's own)")
	f.StringSliceVar(&nsLabels, "namespace-labels", nil, "labels of the namespace, KEY=VALUE,… (tollgate.dev/account, tollgate.dev/project)")
	f.StringSliceVar(&nsAnnotations, "namespace-annotations", nil, "annotations of the namespace, KEY=VALUE,…")
	f.StringVar(&nsEnv, "namespace-env", "", "variable names the namespace already defines, comma-separated (as the "+injector.AnnotationDefinedEnv+" annotation)")
	mf.register(f, "native (init container with restartPolicy Always) or container")
	return cmd
}

// parseKV parses KEY=VALUE flags into a map (empty values allowed).
func parseKV(pairs []string, what string) (map[string]string, error) {
	out := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s %q: want KEY=VALUE", what, p)
		}
		out[k] = v
	}
	return out, nil
}
