# Tollgate. `make run` starts the gateway on its embedded defaults (offline,
# mock providers); `make test` runs every test. .ci/run calls `make test`.

GO       ?= go
BIN      ?= bin/tollgate
NODE_DIR := test/node
MODULE   := github.com/tollgate-dev/tollgate

.PHONY: run build test test-go kube-tools node-deps fuzz bench bench-go bench-load bench-streams load-envoy lint clean proto

run:
	$(GO) build -o $(BIN) ./cmd/tollgate
	$(BIN) dev --mock

# tollgate, and beside it tollgate-injector, which `tollgate inject` runs.
build:
	$(GO) build -o $(BIN) ./cmd/tollgate
	$(GO) build -o $(dir $(BIN))tollgate-injector ./cmd/tollgate-injector

node-deps:
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	npm ci --prefix test/node-latest --no-audit --no-fund --loglevel=error
	npm ci --prefix examples/dad-jokes --no-audit --no-fund --loglevel=error

# Every test: unit, fuzz seeds, recorded-traffic replay, and the official Go
# and Node SDKs end to end, all with the race detector.
#
# A cold kube-apiserver build takes minutes of CPU while most end-to-end
# tests spend their time waiting on the clock, so the build runs beside every
# package but test/kube, which runs once both are done.
KUBE_PKG := ./test/kube
test: node-deps lint
	@mkdir -p .cache; \
	$(MAKE) --no-print-directory kube-tools > .cache/kube-tools.log 2>&1 & kube=$$!; \
	KUBE_ASSETS=$(KUBE_ASSETS) $(GO) test -race -count=1 -timeout 25m $$($(GO) list ./... | grep -vx '$(MODULE)/test/kube'); rc=$$?; \
	wait $$kube || { cat .cache/kube-tools.log; echo "kube-tools: build failed"; exit 1; }; \
	[ $$rc -eq 0 ] || exit $$rc; \
	KUBE_ASSETS=$(KUBE_ASSETS) $(GO) test -race -count=1 -timeout 10m $(KUBE_PKG)

# kube-apiserver and etcd for the real-API-server tests in test/kube, built
# from the Go module proxy into .cache/kube/bin once per version (cold: about
# 1,300 CPU-seconds; warm: seconds). With KUBE_ASSETS set those tests fail
# rather than skip when the binaries are missing.
KUBE_ASSETS ?= $(CURDIR)/.cache/kube/bin
kube-tools:
	KUBE_TOOLS_DIR=$(KUBE_ASSETS) ./test/kube/tools/build.sh

# vet and staticcheck load packages built with -race, the flags `go test
# -race` builds with, so a cold CI machine compiles the dependencies once
# for both rather than twice. staticcheck itself is built without them.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint:
	test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt: the files above need formatting"; exit 1; }
	$(GO) mod tidy -diff || { echo "go.mod/go.sum: run go mod tidy"; exit 1; }
	GOFLAGS=-race $(GO) vet ./...
	GOBIN=$(CURDIR)/bin $(GO) install $(STATICCHECK)
	GOFLAGS=-race bin/staticcheck ./...

# Short fuzzing of every parser (go test -fuzz runs one target at a time).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecoder$$' -fuzztime $(FUZZTIME) ./pkg/sse
	$(GO) test -run '^$$' -fuzz '^FuzzField$$' -fuzztime $(FUZZTIME) ./pkg/jsonscan
	$(GO) test -run '^$$' -fuzz '^FuzzArraySplitter$$' -fuzztime $(FUZZTIME) ./pkg/jsonscan
	$(GO) test -run '^$$' -fuzz '^FuzzParseApply$$' -fuzztime $(FUZZTIME) ./pkg/jsonedit
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZTIME) ./pkg/auth
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./pkg/auth
	$(GO) test -run '^$$' -fuzz '^FuzzOpenAIUsage$$' -fuzztime $(FUZZTIME) ./pkg/provider/openai
	$(GO) test -run '^$$' -fuzz '^FuzzAnthropicUsage$$' -fuzztime $(FUZZTIME) ./pkg/provider/anthropic
	$(GO) test -run '^$$' -fuzz '^FuzzGeminiUsage$$' -fuzztime $(FUZZTIME) ./pkg/provider/gemini
	$(GO) test -run '^$$' -fuzz '^FuzzRequest$$' -fuzztime $(FUZZTIME) ./pkg/gateway
	$(GO) test -run '^$$' -fuzz '^FuzzResponse$$' -fuzztime $(FUZZTIME) ./pkg/gateway
	$(GO) test -run '^$$' -fuzz '^FuzzPriceRoundTrip$$' -fuzztime $(FUZZTIME) ./pkg/catalog
	$(GO) test -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime $(FUZZTIME) ./pkg/catalog
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./pkg/strictyaml
	$(GO) test -run '^$$' -fuzz '^FuzzWalk$$' -fuzztime $(FUZZTIME) ./pkg/tokenize
	$(GO) test -run '^$$' -fuzz '^FuzzParseCredits$$' -fuzztime $(FUZZTIME) ./pkg/admin
	$(GO) test -run '^$$' -fuzz '^FuzzParseUsageQuery$$' -fuzztime $(FUZZTIME) ./pkg/admin
	$(GO) test -run '^$$' -fuzz '^FuzzParseRate$$' -fuzztime $(FUZZTIME) ./pkg/meter
	$(GO) test -run '^$$' -fuzz '^FuzzStream$$' -fuzztime $(FUZZTIME) ./pkg/extproc
	$(GO) test -run '^$$' -fuzz '^FuzzCheck$$' -fuzztime $(FUZZTIME) ./pkg/extauthz
	$(GO) test -run '^$$' -fuzz '^FuzzCredits$$' -fuzztime $(FUZZTIME) ./pkg/meter
	$(GO) test -run '^$$' -fuzz '^FuzzParseProcessor$$' -fuzztime $(FUZZTIME) ./sidecar
	$(GO) test -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime $(FUZZTIME) ./sidecar
	$(GO) test -run '^$$' -fuzz '^FuzzSpool$$' -fuzztime $(FUZZTIME) ./pkg/ledger
	$(GO) test -run '^$$' -fuzz '^FuzzCreatePatch$$' -fuzztime $(FUZZTIME) ./injector
	$(GO) test -run '^$$' -fuzz '^FuzzWebhook$$' -fuzztime $(FUZZTIME) ./injector
	$(GO) test -run '^$$' -fuzz '^FuzzInjectManifests$$' -fuzztime $(FUZZTIME) ./injector
	$(GO) test -run '^$$' -fuzz '^FuzzChunkFramer$$' -fuzztime $(FUZZTIME) ./test/load/baseline

bench: bench-go bench-load

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./pkg/...

# Proxy overhead with wrk on loopback (needs wrk and taskset; see docs/benchmarks.md).
bench-load: build
	./test/load/run.sh

# The proxy's memory with 1,000 streams open (needs wrk; see docs/benchmarks.md).
bench-streams: build
	./test/load/streams.sh

# The admin API's Go code, regenerated from proto/ with buf and the protoc
# plugins from the Go module proxy (no Buf registry). The result is committed;
# a test in proto/tollgate/v1 fails when it is stale.
BUF ?= github.com/bufbuild/buf/cmd/buf@v1.75.0
proto:
	cd proto && $(GO) run $(BUF) generate

# 1,000 concurrent streams for 60 s through envoysim -> tollgate serve
# (ext_proc) -> mock provider: throughput, processor RSS, goroutine leak
# check (see docs/benchmarks.md). LOAD_STREAMS and LOAD_DURATION (s) tune it.
load-envoy:
	$(GO) test -tags load -count=1 -run '^TestSustainedLoad$$' -v -timeout 15m ./test/envoysim

clean:
	rm -rf bin
