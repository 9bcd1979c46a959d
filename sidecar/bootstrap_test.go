package sidecar

import (
	"bytes"
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func build(t *testing.T, o Options) *bootstrapv3.Bootstrap {
	t.Helper()
	b, err := Bootstrap(o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBootstrapGolden(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   Options
		format string
	}{
		{"bootstrap.golden.yaml", Options{}, "yaml"},
		{"bootstrap-unix-extauthz.golden.json", Options{Processor: "unix:///run/tollgate/processor.sock", ExtAuthz: true, ListenPort: 18080}, "json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := build(t, tc.opts)
			if err := Validate(b); err != nil {
				t.Fatalf("the bootstrap we ship does not validate:\n%v", err)
			}
			got, err := Render(b, tc.format)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tc.name)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./sidecar -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the rendered bootstrap (run go test ./sidecar -update and review the diff)", path)
			}
			// The rendered text reads back into the same config.
			back, err := Load(got)
			if err != nil {
				t.Fatal(err)
			}
			// protocmp compares typed_config by content (packed bytes
			// depend on map order).
			if d := cmp.Diff(b, back, protocmp.Transform()); d != "" {
				t.Errorf("Load(Render(b)) != b:\n%s", d)
			}
			again, err := Render(back, tc.format)
			if err != nil || !bytes.Equal(again, got) {
				t.Errorf("rendering is not stable: %v", err)
			}
		})
	}
}

func TestOptionsAppear(t *testing.T) {
	b := build(t, Options{ListenPort: 16000, Processor: "10.1.2.3:9100", MessageTimeout: 3 * time.Second, MaxMessageTimeout: 30 * time.Second})
	in, err := ParseIngress(b)
	if err != nil {
		t.Fatal(err)
	}
	if p := in.ListenAddress().GetPortValue(); p != 16000 {
		t.Errorf("listen port %d", p)
	}
	if got := in.ListenAddress().GetAddress(); got != DefaultListenAddress {
		t.Errorf("listen address %q, want loopback", got)
	}
	a, err := in.Endpoint(ProcessorCluster)
	if err != nil {
		t.Fatal(err)
	}
	if sa := a.GetSocketAddress(); sa.GetAddress() != "10.1.2.3" || sa.GetPortValue() != 9100 {
		t.Errorf("processor endpoint %v", sa)
	}
	if tp := in.Clusters[ProcessorCluster].GetType(); tp != clusterv3.Cluster_STATIC {
		t.Errorf("an IP processor is a STATIC cluster, got %v", tp)
	}
	if d := in.ExtProc.GetMessageTimeout().AsDuration(); d != 3*time.Second {
		t.Errorf("message timeout %v", d)
	}
	if d := in.ExtProc.GetMaxMessageTimeout().AsDuration(); d != 30*time.Second {
		t.Errorf("max message timeout %v", d)
	}
	if in.ExtAuthz != nil {
		t.Error("ext_authz is off by default")
	}
	dns := build(t, Options{Processor: "processor.example:9002"})
	in, _ = ParseIngress(dns)
	if tp := in.Clusters[ProcessorCluster].GetType(); tp != clusterv3.Cluster_STRICT_DNS {
		t.Errorf("a named processor is STRICT_DNS, got %v", tp)
	}
	unix := build(t, Options{Processor: "/run/p.sock"})
	in, _ = ParseIngress(unix)
	a, _ = in.Endpoint(ProcessorCluster)
	if a.GetPipe().GetPath() != "/run/p.sock" {
		t.Errorf("unix processor endpoint %v", a)
	}
}

func TestBadOptions(t *testing.T) {
	for _, o := range []Options{
		{Processor: "no-port"},
		{Processor: "host:0"},
		{Processor: "unix://relative.sock"},
		{ListenPort: DefaultAdminPort},
		{ListenAddress: "localhost"},
		{MessageTimeout: 20 * time.Second},
		{Providers: []Provider{{Name: "x", Prefix: "x", Host: "h"}}},
		{Providers: []Provider{{Name: "x", Prefix: "/x/v1/", Host: "h"}}},
		{Providers: []Provider{{Name: "x", Prefix: "//", Host: "h"}}},
		{Providers: []Provider{{Name: ProcessorCluster, Prefix: "/x/", Host: "h"}}},
		{ListenPort: 70000},
		{RequestBufferBytes: math.MaxUint32},
	} {
		if _, err := Bootstrap(o); err == nil {
			t.Errorf("Bootstrap(%+v) accepted", o)
		}
	}
}

// edit unpacks an Any, lets f change it, and packs it back.
func edit[M proto.Message](t *testing.T, a *anypb.Any, m M, f func(M)) {
	t.Helper()
	if err := a.UnmarshalTo(m); err != nil {
		t.Fatal(err)
	}
	f(m)
	n, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	a.Value = n.Value
}

func hcmAny(b *bootstrapv3.Bootstrap) *anypb.Any {
	return b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig()
}

func editHCM(t *testing.T, b *bootstrapv3.Bootstrap, f func(*hcmv3.HttpConnectionManager)) {
	edit(t, hcmAny(b), &hcmv3.HttpConnectionManager{}, f)
}

func editExtProc(t *testing.T, b *bootstrapv3.Bootstrap, f func(*extprocv3.ExternalProcessor)) {
	editHCM(t, b, func(h *hcmv3.HttpConnectionManager) {
		for _, hf := range h.GetHttpFilters() {
			if hf.GetName() == FilterExtProc {
				edit(t, hf.GetTypedConfig(), &extprocv3.ExternalProcessor{}, f)
			}
		}
	})
}

func editRoute(t *testing.T, b *bootstrapv3.Bootstrap, name string, f func(*routev3.Route)) {
	editHCM(t, b, func(h *hcmv3.HttpConnectionManager) {
		for _, r := range h.GetRouteConfig().GetVirtualHosts()[0].GetRoutes() {
			if r.GetName() == name {
				f(r)
			}
		}
	})
}

func cluster(b *bootstrapv3.Bootstrap, name string) *clusterv3.Cluster {
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == name {
			return c
		}
	}
	return nil
}

func perRoute(t *testing.T, pr *extprocv3.ExtProcPerRoute) map[string]*anypb.Any {
	a, err := anypb.New(pr)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]*anypb.Any{FilterExtProc: a}
}

// TestValidatorCatchesEachKnob turns one knob at a time away from the
// shipped config and checks that Validate reports that very problem.
func TestValidatorCatchesEachKnob(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   Options
		mutate func(t *testing.T, b *bootstrapv3.Bootstrap)
		want   string
	}{
		{"failure_mode_allow true", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editExtProc(t, b, func(e *extprocv3.ExternalProcessor) { e.FailureModeAllow = true })
		}, "failure_mode_allow must be false"},
		{"processor cluster missing", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			sr := b.GetStaticResources()
			sr.Clusters = sr.Clusters[1:]
		}, `cluster "tollgate_processor" is not defined`},
		{"processor cluster HTTP/1", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			h1, _ := anypb.New(&httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
				ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{
					HttpProtocolOptions: &corev3.Http1ProtocolOptions{}}}}})
			cluster(b, ProcessorCluster).TypedExtensionProtocolOptions[httpProtocolOptionsName] = h1
		}, "must be HTTP/2 only"},
		{"processor cluster with Envoy's default buffer", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			cluster(b, ProcessorCluster).PerConnectionBufferLimitBytes = nil
		}, `cluster "tollgate_processor" per_connection_buffer_limit_bytes must be at least 35651584`},
		{"processor cluster buffer without headroom", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			cluster(b, ProcessorCluster).PerConnectionBufferLimitBytes = wrapperspb.UInt32(DefaultRequestBufferBytes)
		}, `cluster "tollgate_processor" per_connection_buffer_limit_bytes must be at least`},
		{"x-envoy headers left to the client", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editExtProc(t, b, func(e *extprocv3.ExternalProcessor) { e.MutationRules.AllowEnvoy = nil })
		}, "mutation_rules.allow_envoy must be true"},
		{"processor cluster with Envoy's default circuit breakers", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			cluster(b, ProcessorCluster).CircuitBreakers = nil
		}, `cluster "tollgate_processor": circuit_breakers must set`},
		{"provider cluster without a pending-request limit", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			cluster(b, "anthropic").CircuitBreakers.Thresholds[0].MaxPendingRequests = nil
		}, `cluster "anthropic": circuit_breakers must set`},
		{"processor streams below a provider's requests", Options{MaxRequests: 5000}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			cluster(b, ProcessorCluster).CircuitBreakers.Thresholds[0].MaxRequests = wrapperspb.UInt32(4000)
		}, `max_requests 4000 is below provider cluster`},
		{"processor cluster without endpoints", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			cluster(b, ProcessorCluster).LoadAssignment.Endpoints = nil
		}, "has no endpoint"},
		{"request body not buffered", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editExtProc(t, b, func(e *extprocv3.ExternalProcessor) {
				e.ProcessingMode.RequestBodyMode = extprocv3.ProcessingMode_STREAMED
			})
		}, "processing_mode"},
		{"response body buffered", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editExtProc(t, b, func(e *extprocv3.ExternalProcessor) {
				e.ProcessingMode.ResponseBodyMode = extprocv3.ProcessingMode_BUFFERED
			})
		}, "processing_mode"},
		{"full duplex without trailers", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editExtProc(t, b, func(e *extprocv3.ExternalProcessor) {
				e.ProcessingMode.ResponseBodyMode = extprocv3.ProcessingMode_FULL_DUPLEX_STREAMED
				e.ProcessingMode.ResponseTrailerMode = extprocv3.ProcessingMode_SKIP
			})
		}, "needs response_trailer_mode SEND"},
		{"response trailers skipped", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editExtProc(t, b, func(e *extprocv3.ExternalProcessor) {
				e.ProcessingMode.ResponseTrailerMode = extprocv3.ProcessingMode_SKIP
			})
		}, "processing_mode"},
		{"full duplex with failure_mode_allow", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editExtProc(t, b, func(e *extprocv3.ExternalProcessor) {
				e.ProcessingMode.RequestBodyMode = extprocv3.ProcessingMode_FULL_DUPLEX_STREAMED
				e.ProcessingMode.RequestTrailerMode = extprocv3.ProcessingMode_SEND
				e.FailureModeAllow = true
			})
		}, "cannot be true with FULL_DUPLEX_STREAMED"},
		{"grpc and http service", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editExtProc(t, b, func(e *extprocv3.ExternalProcessor) {
				e.HttpService = &extprocv3.ExtProcHttpService{}
			})
		}, "exactly one of grpc_service and http_service"},
		{"disable_clear_route_cache with an action", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editExtProc(t, b, func(e *extprocv3.ExternalProcessor) { e.DisableClearRouteCache = true })
		}, "disable_clear_route_cache cannot be combined"},
		{"route cache cleared", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editExtProc(t, b, func(e *extprocv3.ExternalProcessor) { e.RouteCacheAction = extprocv3.ExternalProcessor_DEFAULT })
		}, "route_cache_action must be RETAIN"},
		{"no max message timeout", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editExtProc(t, b, func(e *extprocv3.ExternalProcessor) { e.MaxMessageTimeout = nil })
		}, "max_message_timeout must be set"},
		{"incomplete allowed override", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editExtProc(t, b, func(e *extprocv3.ExternalProcessor) {
				e.AllowModeOverride = true
				e.AllowedOverrideModes = []*extprocv3.ProcessingMode{{ResponseBodyMode: extprocv3.ProcessingMode_STREAMED}}
			})
		}, "must state every header and trailer mode"},
		{"unreachable allowed override", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editExtProc(t, b, func(e *extprocv3.ExternalProcessor) {
				e.AllowedOverrideModes = []*extprocv3.ProcessingMode{ProcessingMode()}
			})
		}, "can never apply"},
		{"metadata namespace not received", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editExtProc(t, b, func(e *extprocv3.ExternalProcessor) { e.MetadataOptions = nil })
		}, `receiving_namespaces.untyped must list "tollgate"`},
		{"observability mode", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editExtProc(t, b, func(e *extprocv3.ExternalProcessor) { e.ObservabilityMode = true })
		}, "observability_mode"},
		{"ext_proc removed", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editHCM(t, b, func(h *hcmv3.HttpConnectionManager) { h.HttpFilters = h.HttpFilters[1:] })
		}, "no envoy.filters.http.ext_proc"},
		{"router not last", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editHCM(t, b, func(h *hcmv3.HttpConnectionManager) {
				h.HttpFilters[0], h.HttpFilters[1] = h.HttpFilters[1], h.HttpFilters[0]
			})
		}, "the last one must be envoy.filters.http.router"},
		{"ext_authz after ext_proc", Options{ExtAuthz: true}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editHCM(t, b, func(h *hcmv3.HttpConnectionManager) {
				h.HttpFilters[0], h.HttpFilters[1] = h.HttpFilters[1], h.HttpFilters[0]
			})
		}, "must come before"},
		{"ext_authz route without the ext_proc context extension", Options{ExtAuthz: true}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editRoute(t, b, "anthropic", func(r *routev3.Route) { delete(r.TypedPerFilterConfig, FilterExtAuthz) })
		}, `anthropic": ext_authz needs check_settings.context_extensions tollgate-ext-proc`},
		{"HTTP/1.0 refused", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editHCM(t, b, func(h *hcmv3.HttpConnectionManager) { h.HttpProtocolOptions = nil })
		}, "accept_http_10 must be true"},
		{"route timeout default", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editRoute(t, b, "openai", func(r *routev3.Route) { r.GetRoute().Timeout = nil })
		}, "timeout must be 0s"},
		{"no idle timeout anywhere", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editHCM(t, b, func(h *hcmv3.HttpConnectionManager) {
				h.StreamIdleTimeout = nil
				h.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[2].GetRoute().IdleTimeout = nil
			})
		}, "set idle_timeout"},
		{"route prefix rewrite removed", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editRoute(t, b, "anthropic", func(r *routev3.Route) { r.GetRoute().PrefixRewrite = "" })
		}, `anthropic": want prefix_rewrite "/"`},
		{"route prefix rewrite keeps a segment", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editRoute(t, b, "openai", func(r *routev3.Route) { r.GetRoute().PrefixRewrite = "/v1/" })
		}, `openai": want prefix_rewrite "/"`},
		{"route regex rewrite", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editRoute(t, b, "gemini", func(r *routev3.Route) {
				r.GetRoute().RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
					Pattern: &matcherv3.RegexMatcher{Regex: "^/gemini"}, Substitution: ""}
			})
		}, `gemini": want prefix_rewrite "/"`},
		{"route prefix of two segments", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editRoute(t, b, "openai", func(r *routev3.Route) {
				r.Match.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/openai/v1/"}
			})
		}, "prefix match of one segment"},
		{"route to a missing cluster", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editRoute(t, b, "gemini", func(r *routev3.Route) {
				r.GetRoute().ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "vertex"}
			})
		}, `cluster "vertex" is not defined`},
		{"ext_proc disabled on a provider route", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editRoute(t, b, "openai", func(r *routev3.Route) {
				r.TypedPerFilterConfig = perRoute(t, &extprocv3.ExtProcPerRoute{Override: &extprocv3.ExtProcPerRoute_Disabled{Disabled: true}})
			})
		}, "unmetered"},
		{"per-route failure_mode_allow", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editRoute(t, b, "openai", func(r *routev3.Route) {
				r.TypedPerFilterConfig = perRoute(t, &extprocv3.ExtProcPerRoute{Override: &extprocv3.ExtProcPerRoute_Overrides{
					Overrides: &extprocv3.ExtProcOverrides{FailureModeAllow: wrapperspb.Bool(true)}}})
			})
		}, "override sets failure_mode_allow"},
		{"per-route full duplex (Envoy does not check it)", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editRoute(t, b, "openai", func(r *routev3.Route) {
				pm := ProcessingMode()
				pm.ResponseBodyMode = extprocv3.ProcessingMode_FULL_DUPLEX_STREAMED
				pm.ResponseTrailerMode = extprocv3.ProcessingMode_SKIP
				r.TypedPerFilterConfig = perRoute(t, &extprocv3.ExtProcPerRoute{Override: &extprocv3.ExtProcPerRoute_Overrides{
					Overrides: &extprocv3.ExtProcOverrides{ProcessingMode: pm}}})
			})
		}, "override: response_body_mode FULL_DUPLEX_STREAMED needs response_trailer_mode SEND"},
		{"virtual host full duplex under a route config without a mode (Envoy merges them)", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editHCM(t, b, func(h *hcmv3.HttpConnectionManager) {
				pm := ProcessingMode()
				pm.ResponseBodyMode = extprocv3.ProcessingMode_FULL_DUPLEX_STREAMED
				pm.ResponseTrailerMode = extprocv3.ProcessingMode_SKIP
				vh := h.GetRouteConfig().GetVirtualHosts()[0]
				vh.TypedPerFilterConfig = perRoute(t, &extprocv3.ExtProcPerRoute{Override: &extprocv3.ExtProcPerRoute_Overrides{
					Overrides: &extprocv3.ExtProcOverrides{ProcessingMode: pm}}})
				for _, r := range vh.GetRoutes() {
					if r.GetName() == "openai" {
						r.TypedPerFilterConfig = perRoute(t, &extprocv3.ExtProcPerRoute{Override: &extprocv3.ExtProcPerRoute_Overrides{
							Overrides: &extprocv3.ExtProcOverrides{GrpcInitialMetadata: []*corev3.HeaderValue{{Key: "x-tenant", Value: "a"}}}}})
					}
				}
			})
		}, `route "openai" ext_proc override: response_body_mode FULL_DUPLEX_STREAMED needs response_trailer_mode SEND`},
		{"provider without TLS", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			cluster(b, "openai").TransportSocket = nil
		}, "must use TLS"},
		{"SNI of another host", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editRoute(t, b, "gemini", func(r *routev3.Route) {
				r.GetRoute().HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "evil.example"}
			})
		}, `SNI "generativelanguage.googleapis.com", want the routed host "evil.example"`},
		{"small request buffer", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			b.GetStaticResources().GetListeners()[0].PerConnectionBufferLimitBytes = nil
		}, "per_connection_buffer_limit_bytes"},
		{"access log with the authorization header", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editHCM(t, b, func(h *hcmv3.HttpConnectionManager) {
				edit(t, h.GetAccessLog()[0].GetTypedConfig(), &streamv3.StdoutAccessLog{}, func(s *streamv3.StdoutAccessLog) {
					s.GetLogFormat().GetJsonFormat().Fields["auth"] = structpb.NewStringValue("%REQ(AUTHORIZATION)%")
				})
			})
		}, "%REQ(AUTHORIZATION)% may log"},
		{"access log with the path", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editHCM(t, b, func(h *hcmv3.HttpConnectionManager) {
				edit(t, h.GetAccessLog()[0].GetTypedConfig(), &streamv3.StdoutAccessLog{}, func(s *streamv3.StdoutAccessLog) {
					s.GetLogFormat().GetJsonFormat().Fields["path"] = structpb.NewStringValue("%REQ(:PATH)%")
				})
			})
		}, "%REQ(:PATH)% may log"},
		{"field rule: negative timeout", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			cluster(b, "openai").ConnectTimeout = durationpb.New(-time.Second)
		}, "ConnectTimeout"},
		{"field rule inside a typed_config", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editHCM(t, b, func(h *hcmv3.HttpConnectionManager) { h.StatPrefix = "" })
		}, "StatPrefix"},
		{"unresolvable typed_config", Options{}, func(t *testing.T, b *bootstrapv3.Bootstrap) {
			hcmAny(b).TypeUrl = "type.googleapis.com/envoy.extensions.filters.network.unknown.v3.Nope"
		}, "cannot be resolved"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := build(t, tc.opts)
			if err := Validate(b); err != nil {
				t.Fatalf("unmutated config fails: %v", err)
			}
			tc.mutate(t, b)
			err := Validate(b)
			if err == nil {
				t.Fatal("Validate accepted the mutated config")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate said\n%v\nwant a problem mentioning %q", err, tc.want)
			}
		})
	}
}
