package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"sigs.k8s.io/yaml"

	"github.com/tollgate-dev/tollgate/injector"
	"github.com/tollgate-dev/tollgate/injector/adminapi"
	"github.com/tollgate-dev/tollgate/injector/certs"
	"github.com/tollgate-dev/tollgate/injector/controller"
	"github.com/tollgate-dev/tollgate/sidecar"
)

// mutationFlags configure the pod mutation, shared by `inject -f` and
// `inject serve` so that both inject the same thing.
type mutationFlags struct {
	image, sidecarMode, tokenSecret, envFromPolicy string
	pullPolicy, resources                          string
	gatewayKey, gatewayBaseURL                     string
	extraSidecars                                  []string
	proxy                                          sidecar.Options
}

func (f *mutationFlags) register(fs *pflag.FlagSet, mode, modes string) {
	fs.StringVar(&f.image, "proxy-image", injector.DefaultProxyImage, "Envoy image of the tollgate-proxy sidecar")
	fs.StringVar(&f.pullPolicy, "proxy-image-pull-policy", "", "imagePullPolicy of the proxy container: Always, IfNotPresent or Never (default: Kubernetes' own)")
	fs.StringVar(&f.resources, "proxy-resources", "", "resources of the proxy container, as JSON or YAML of a container's resources ({\"requests\":{\"cpu\":\"50m\"},\"limits\":{…}}); default requests 50m CPU / 64Mi, limits 1 CPU / 256Mi")
	fs.StringVar(&f.sidecarMode, "sidecar-mode", mode, "how the proxy is added: "+modes)
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
	proxy.PullPolicy = corev1.PullPolicy(f.pullPolicy)
	if f.resources != "" {
		var res corev1.ResourceRequirements
		if err := yaml.UnmarshalStrict([]byte(f.resources), &res); err != nil {
			return injector.Config{}, fmt.Errorf("--proxy-resources: %w", err)
		}
		proxy.Resources = res
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
		Use:           "tollgate-injector -f FILE",
		SilenceUsage:  true,
		SilenceErrors: true,
		Short:         "Add the tollgate-proxy sidecar and the provider variables to workloads in YAML, or run the injector (serve)",
		Long: `Reads Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets, ReplicationControllers,
Jobs and CronJobs from multi-document YAML (- for stdin) and prints them with their pod
templates injected exactly as the admission webhook would: the sidecar, and on every app
container the provider variables unless the user defined them. Other objects pass through
unchanged.

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
	mf.register(f, injector.SidecarNative, "native (init container with restartPolicy Always) or container")
	cmd.AddCommand(newInjectServeCmd(), newSidecarCmd())
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

// serveFlags are `tollgate inject serve`'s own flags.
type serveFlags struct {
	listen, kubeconfig, namespace, logLevel                   string
	tlsMode, certFile, keyFile, tlsSecret, webhookConfig      string
	service                                                   string
	tlsHosts                                                  []string
	adminURL, adminTokenFile                                  string
	readSecrets, leaderElect                                  bool
	reviewTimeout, accountTTL, resync, tokenTTL, rotateBefore time.Duration
}

func newInjectServeCmd() *cobra.Command {
	var (
		mf mutationFlags
		sf serveFlags
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the mutating admission webhook (HTTPS) and the gateway-token controller",
		Long: `Serves the webhook at ` + injector.WebhookPath + ` over HTTPS, /healthz and /readyz on the same port,
and (with --admin-url) runs the controller that keeps a gateway-token Secret in every
opted-in namespace, leader-elected among replicas. Runs in the cluster with its
ServiceAccount, or outside with --kubeconfig.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runInjectServe(cmd.Context(), &mf, &sf)
		},
	}
	f := cmd.Flags()
	mf.register(f, "auto", "auto (native when the API server is 1.29 or later), native or container")
	f.StringVar(&sf.listen, "listen", ":8443", "HTTPS address of the webhook and health endpoints")
	f.StringVar(&sf.kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster configuration)")
	f.StringVar(&sf.namespace, "namespace", envOr("POD_NAMESPACE", "tollgate-system"), "the injector's own namespace (never injected; holds its TLS Secret and leader lease)")
	f.StringVar(&sf.logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&sf.tlsMode, "tls-mode", "self-signed", "self-signed (own CA in a Secret, caBundle patched into the webhook configuration) or files (certificate mounted, e.g. by cert-manager)")
	f.StringVar(&sf.certFile, "tls-cert-file", "/etc/tollgate/tls/tls.crt", "serving certificate (files mode)")
	f.StringVar(&sf.keyFile, "tls-key-file", "/etc/tollgate/tls/tls.key", "serving key (files mode)")
	f.StringVar(&sf.tlsSecret, "tls-secret", "tollgate-injector-tls", "Secret holding the CA and serving certificate (self-signed mode)")
	f.StringVar(&sf.webhookConfig, "webhook-config", "tollgate-injector", "MutatingWebhookConfiguration whose caBundle is kept (self-signed mode)")
	f.StringVar(&sf.service, "service", "tollgate-injector", "the webhook's Service; the certificate covers SERVICE.NAMESPACE.svc[.cluster.local]")
	f.StringSliceVar(&sf.tlsHosts, "tls-hosts", nil, "more DNS names or IPs the certificate covers (a webhook registered by URL)")
	f.StringVar(&sf.adminURL, "admin-url", "", "the processor's admin API (e.g. http://tollgate-admin.tollgate-system.svc:8081); without it no tokens are managed and accounts are not checked")
	f.StringVar(&sf.adminTokenFile, "admin-token-file", "/etc/tollgate/admin/token", "file holding the admin API token")
	f.BoolVar(&sf.readSecrets, "read-secret-keys", false, "read the keys of envFrom Secrets (needs RBAC get on secrets); otherwise --env-from-policy applies to them")
	f.BoolVar(&sf.leaderElect, "leader-elect", true, "run the token controller on one replica at a time (a Lease in --namespace)")
	f.DurationVar(&sf.reviewTimeout, "review-timeout", 5*time.Second, "longest time spent on one admission review; keep below the webhook's timeoutSeconds")
	f.DurationVar(&sf.accountTTL, "account-cache-ttl", time.Minute, "how long an account's enabled/disabled answer is reused")
	f.DurationVar(&sf.resync, "resync", 5*time.Minute, "how often every namespace is re-checked (account status, rotation)")
	f.DurationVar(&sf.tokenTTL, "token-ttl", 90*24*time.Hour, "lifetime of a namespace's gateway token")
	f.DurationVar(&sf.rotateBefore, "token-rotate-before", 45*24*time.Hour, "replace a token this long before it expires (the least validity a starting pod gets)")
	return cmd
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func runInjectServe(ctx context.Context, mf *mutationFlags, sf *serveFlags) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(sf.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", sf.logLevel)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	rc, err := kubeConfig(sf.kubeconfig)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	mode := mf.sidecarMode
	if mode == "auto" {
		if mode, err = detectSidecarMode(client); err != nil {
			return err
		}
		log.Info("inject: sidecar mode detected", "mode", mode)
	}
	if mode != injector.SidecarNative && mode != injector.SidecarContainer {
		return fmt.Errorf("--sidecar-mode %q: want auto, native or container", mode)
	}
	cfg, err := mf.config(mode, sf.namespace)
	if err != nil {
		return err
	}

	var api *adminapi.Client
	var accounts injector.AccountChecker
	if sf.adminURL != "" {
		tok, err := os.ReadFile(sf.adminTokenFile)
		if err != nil {
			return fmt.Errorf("admin token: %w", err)
		}
		if api, err = adminapi.New(sf.adminURL, strings.TrimSpace(string(tok)), nil); err != nil {
			return err
		}
		accounts = adminapi.NewAccountCache(api, sf.accountTTL)
	} else {
		log.Warn("inject: no --admin-url: accounts are not checked and no gateway-token Secrets are managed")
	}

	factory := informers.NewSharedInformerFactory(client, sf.resync)
	nsInformer := factory.Core().V1().Namespaces()
	mutator, err := injector.NewMutator(cfg, injector.APIKeys{Client: client, ReadSecrets: sf.readSecrets}, accounts, log)
	if err != nil {
		return err
	}
	var ctrl *controller.Controller
	if api != nil {
		ctrl, err = controller.New(controller.Config{
			SecretName: cfg.TokenSecret, OwnNamespace: sf.namespace, TTL: sf.tokenTTL, RotateBefore: sf.rotateBefore,
		}, client, factory, api, accounts, log)
		if err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	factory.Start(ctx.Done())

	reloader := &certs.Reloader{}
	tlsReady := reloader.Loaded
	errc := make(chan error, 3)
	switch sf.tlsMode {
	case "files":
		go func() {
			errc <- certs.WatchFiles(ctx, reloader, sf.certFile, sf.keyFile, 30*time.Second, func(err error) {
				log.Warn("inject: reloading the serving certificate failed", "err", err)
			})
		}()
	case "self-signed":
		hosts := []string{sf.service + "." + sf.namespace + ".svc", sf.service + "." + sf.namespace + ".svc.cluster.local"}
		ss := &certs.SelfSigned{
			Client: client, Namespace: sf.namespace, SecretName: sf.tlsSecret, WebhookConfig: sf.webhookConfig,
			Hosts: append(hosts, sf.tlsHosts...), Reloader: reloader, Log: log,
		}
		tlsReady = func() bool { return reloader.Loaded() && ss.Ready() }
		go ss.Run(ctx, 30*time.Second)
	default:
		return fmt.Errorf("--tls-mode %q: want self-signed or files", sf.tlsMode)
	}

	if ctrl != nil {
		go func() { errc <- runController(ctx, client, ctrl, sf, log) }()
	}

	mux := http.NewServeMux()
	mux.Handle(injector.WebhookPath, injector.NewWebhook(mutator, injector.NamespaceLister{Lister: nsInformer.Lister(), Client: client}, sf.reviewTimeout, log))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case !nsInformer.Informer().HasSynced():
			http.Error(w, "namespace cache not synced", http.StatusServiceUnavailable)
		case !tlsReady():
			http.Error(w, "serving certificate or caBundle not in place", http.StatusServiceUnavailable)
		default:
			fmt.Fprintln(w, "ok")
		}
	})
	ln, err := net.Listen("tcp", sf.listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           mux,
		TLSConfig:         reloader.TLSConfig(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	log.Info("inject: serving", "addr", ln.Addr().String(), "path", injector.WebhookPath, "sidecar_mode", mode, "tls_mode", sf.tlsMode)

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if serr := srv.Shutdown(sctx); err == nil || errors.Is(err, http.ErrServerClosed) {
		err = serr
	}
	return err
}

func kubeConfig(path string) (*rest.Config, error) {
	if path == "" {
		c, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster configuration (use --kubeconfig outside a cluster): %w", err)
		}
		return c, nil
	}
	c, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return c, nil
}

// detectSidecarMode picks native sidecars from 1.29 on (SidecarContainers
// beta and on by default; GA in 1.33), a regular container before.
func detectSidecarMode(client kubernetes.Interface) (string, error) {
	v, err := client.Discovery().ServerVersion()
	if err != nil {
		return "", fmt.Errorf("detecting the API server version (or set --sidecar-mode): %w", err)
	}
	major, _ := strconv.Atoi(strings.TrimRight(v.Major, "+"))
	minor, _ := strconv.Atoi(strings.TrimRight(v.Minor, "+"))
	if major > 1 || (major == 1 && minor >= 29) {
		return injector.SidecarNative, nil
	}
	return injector.SidecarContainer, nil
}

// runController runs the token controller, on the elected replica only
// when leader election is on. Losing the lease ends the process (the
// kubelet restarts it as a candidate): a controller's queue cannot be
// restarted.
func runController(ctx context.Context, client kubernetes.Interface, ctrl *controller.Controller, sf *serveFlags, log *slog.Logger) error {
	if !sf.leaderElect {
		return ctrl.Run(ctx, 2)
	}
	id, err := os.Hostname()
	if err != nil {
		return err
	}
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, sf.namespace, "tollgate-injector-controller",
		client.CoreV1(), client.CoordinationV1(), resourcelock.ResourceLockConfig{Identity: id})
	if err != nil {
		return err
	}
	lost := make(chan error, 1)
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lock, ReleaseOnCancel: true,
		LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				log.Info("inject: leading; running the token controller", "identity", id)
				if err := ctrl.Run(ctx, 2); err != nil {
					lost <- err
				}
			},
			OnStoppedLeading: func() {
				if ctx.Err() == nil {
					lost <- errors.New("lost the controller lease")
				}
			},
		},
	})
	if err != nil {
		return err
	}
	le.Run(ctx)
	select {
	case err := <-lost:
		return err
	default:
		return nil
	}
}
