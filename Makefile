# network-correlator. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
GOBIN := $(shell $(GO) env GOPATH)/bin
OCB_VERSION := v0.165.0
STATICCHECK_VERSION := v0.8.2
VICTORIALOGS_VERSION := v1.52.1
COLLECTOR := _build/collector/otelcol-netcorr
CONFIG ?= testdata/collector/console.yaml
# Root tests load eBPF programs and create network namespaces. Packages run
# one at a time so a test that counts signals never sees another's failures.
TESTFLAGS ?= -race -count=1 -p 1 -timeout 40m

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: build
build: ## compile every package (no clang needed: the eBPF objects are committed)
	$(GO) build ./...

.PHONY: test
test: kube-apiserver victoria-logs ## run every test, root and lab tests included (run as root); installs the test servers first
	$(GO) test $(TESTFLAGS) ./...

.PHONY: collector
collector: $(GOBIN)/builder ## build the collector with ocb from builder-config.yaml
	mkdir -p _build/collector
	$(GOBIN)/builder --config builder-config.yaml

.PHONY: run
run: collector ## build and run the collector printing diagnoses to the console (root)
	$(COLLECTOR) --config $(CONFIG)

$(GOBIN)/builder:
	$(GO) install go.opentelemetry.io/collector/cmd/builder@$(OCB_VERSION)

$(GOBIN)/staticcheck:
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

.PHONY: lint
lint: $(GOBIN)/staticcheck ## gofmt, go vet and staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GOBIN)/staticcheck ./...

.PHONY: kube-apiserver
kube-apiserver: ## build (once, cached outside the repo) the kube-apiserver the cluster tests run
	scripts/kube/build-apiserver.sh

.PHONY: victoria-logs
victoria-logs: ## install the VictoriaLogs server the collector e2e exports to (seconds when cached)
	$(GO) install github.com/VictoriaMetrics/VictoriaLogs/app/victoria-logs@$(VICTORIALOGS_VERSION)

.PHONY: generate-bpf
generate-bpf: ## regenerate the eBPF objects (needs clang-16, llvm-16, bpftool)
	$(GO) generate ./bpf/...

.PHONY: check-bpf
check-bpf: generate-bpf ## fail if the committed eBPF objects are stale
	@git diff --exit-code --stat -- bpf/ || { echo "bpf/: generated objects are stale: run make generate-bpf and commit"; exit 1; }

$(GOBIN)/mdatagen: tools/go.mod
	cd tools && $(GO) build -mod=mod -o $(GOBIN)/mdatagen go.opentelemetry.io/collector/cmd/mdatagen

.PHONY: generate
generate: $(GOBIN)/mdatagen ## regenerate the receiver's mdatagen code and documentation.md
	cd receiver/networkcorrelatorreceiver && PATH="$(GOBIN):$$PATH" $(GO) generate ./...

.PHONY: bench
bench: ## benchmarks: correlator, policy evaluator, success-path overhead of the probes (root)
	$(GO) test -run '^$$' -bench . -benchmem -count 1 -timeout 30m ./internal/... ./receiver/...
	$(GO) test -run '^$$' -bench SuccessPathOverhead -benchtime 20000x -count 1 -timeout 30m ./e2e/
	$(GO) test -run '^$$' -bench TimeToDiagnosis -benchtime 2000x -count 1 -timeout 10m ./e2e/

.PHONY: clean
clean:
	rm -rf _build
