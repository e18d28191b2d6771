# WA Blast webhook operator. `make help` lists the targets.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

# Tool versions, pinned. Everything is built from Go modules into bin/.
CONTROLLER_TOOLS_VERSION ?= v0.23.0
HELM_VERSION ?= v3.22.0
GOLANGCI_LINT_VERSION ?= v2.15.0
ENVTEST_K8S_VERSION ?= 1.37.2

LOCALBIN ?= $(CURDIR)/bin
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
# openapi-gen at the kube-openapi version in go.mod: the delivery API's OpenAPI models.
OPENAPI_GEN_VERSION ?= v0.0.0-20260721132016-d427ff9ee9ad
OPENAPI_GEN ?= $(LOCALBIN)/openapi-gen-$(OPENAPI_GEN_VERSION)
HELM ?= $(LOCALBIN)/helm-$(HELM_VERSION)
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)
ENVTEST_ASSETS ?= $(LOCALBIN)/k8s/$(ENVTEST_K8S_VERSION)
KUBEBUILDER_ASSETS ?= $(ENVTEST_ASSETS)
export KUBEBUILDER_ASSETS

GO ?= go
# How long the first make dev takes on a clean module and build cache on an
# idle 2-core machine: it needs about 38 minutes of CPU (measured; README.md).
DEV_FIRST_RUN ?= 20 minutes
IMG ?= ghcr.io/wablast/webhook-operator:0.1.0
GOTEST_FLAGS ?= -count=1
TEST_TIMEOUT ?= 20m

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the CRD and RBAC manifests from the API types and markers.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="./api/...;./internal/..." output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	hack/sync-chart-crd.sh

.PHONY: generate
generate: $(CONTROLLER_GEN) $(OPENAPI_GEN) ## Generate the DeepCopy methods, the typed apply configurations, the delivery API's OpenAPI models, docs/events.md, docs/openapi.json, the field reference in docs/api.md and the chart's Grafana dashboard.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."
	$(OPENAPI_GEN) --output-dir internal/deliveryapi/openapi --output-pkg github.com/wablast/webhook-operator/internal/deliveryapi/openapi \
		--output-file zz_generated.openapi.go --go-header-file hack/boilerplate.go.txt --report-filename /dev/null \
		k8s.io/apimachinery/pkg/apis/meta/v1 k8s.io/apimachinery/pkg/runtime k8s.io/apimachinery/pkg/version \
		k8s.io/apimachinery/pkg/api/resource k8s.io/apimachinery/pkg/util/intstr ./api/delivery/v1alpha1
	rm -rf api/applyconfiguration
	$(CONTROLLER_GEN) applyconfiguration:headerFile="hack/boilerplate.go.txt" paths="./api/v1alpha1/..."
	$(GO) run ./hack/gen-events-doc
	$(GO) run ./hack/gen-openapi
	$(GO) run ./hack/gen-api-doc
	$(GO) run ./hack/gen-dashboard

.PHONY: fmt
fmt: ## Run gofmt on the code.
	gofmt -s -w $$(git ls-files '*.go' | grep -v '^hack/envtest/')

.PHONY: vet
vet: ## Run go vet (end-to-end tests included).
	$(GO) vet -tags e2e,scaleout,reliability,soak,ui ./...

.PHONY: php-cli
php-cli: ## Install php-cli (Debian package) when php is missing: the PHP client's test runs it.
	@command -v php >/dev/null 2>&1 || { \
		echo "installing php-cli (the PHP client in clients/php is tested against a running manager)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq php-cli >/dev/null; }
	@php --version | head -1

.PHONY: test
test: manifests generate fmt vet envtest-bin $(HELM) promtool php-cli ## Run every unit and envtest integration test (builds the envtest binaries and helm, and installs promtool and php-cli, the first time).
	HELM=$(HELM) PROMTOOL=$(PROMTOOL) $(GO) test $(GOTEST_FLAGS) -timeout $(TEST_TIMEOUT) ./...

.PHONY: test-ui
test-ui: envtest-bin chromium ## Drive the page of kubectl webhook ui in headless Chromium against a local control plane and the operator (about a minute); screenshots go to WABLAST_ARTIFACTS (default: a temporary directory).
	CHROMIUM=$(CHROMIUM) $(GO) test -tags ui -count=1 -timeout 10m -v ./test/ui/

.PHONY: test-monitoring
test-monitoring: $(HELM) promtool ## Unit-test the chart's alert rules with promtool and check that the dashboard's queries parse.
	HELM=$(HELM) PROMTOOL=$(PROMTOOL) $(GO) test -count=1 -v ./test/monitoring/

.PHONY: bench
bench: build envtest-bin ## Run the benchmarks (about 6 minutes; use a quiet machine) and write docs/benchmarks.md and its charts in docs/benchmarks/.
	$(GO) run ./hack/bench -cpuprofile bin/bench-cpu -out docs/benchmarks.md

.PHONY: fuzz
# FUZZ_TARGETS are package:target pairs; each is fuzzed for FUZZTIME in turn.
FUZZ_TARGETS = ./internal/ingest/:FuzzDecodeEvent ./internal/ingest/:FuzzBatchLinesKeepTheirData ./internal/ingest/:FuzzObjectFields \
	./internal/jsonscan/:FuzzScannerAgreesWithEncodingJSON ./internal/catalog/:FuzzFastCheckNeverTakesInvalidData \
	./internal/delivery/:FuzzCanonicalDataIsWhatEncodingJSONWrites

fuzz: ## Fuzz the event decoder and the JSON fast paths it relies on, each for FUZZTIME (default 60s).
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzzing $${t#*:} in $${t%%:*}"; \
		$(GO) test $${t%%:*} -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(or $(FUZZTIME),60s); \
	done

.PHONY: test-e2e
test-e2e: build envtest-bin $(HELM) promtool ## End-to-end test: helm install into a local control plane, the built binaries, kubectl and its plugin; a scrape of a manager for the dashboard's and alerts' metrics.
	HELM=$(HELM) PROMTOOL=$(PROMTOOL) $(GO) test -tags e2e -count=1 -timeout 15m -v ./test/e2e/

.PHONY: test-reliability
test-reliability: build envtest-bin ## Reliability tests: kill -9, bad receivers, API server and NATS outages, bad input (about 3 minutes).
	RELIABILITY_MANAGER_BIN=$(LOCALBIN)/manager $(GO) test -tags reliability -count=1 -timeout 20m -v ./test/reliability/

.PHONY: test-scaleout
test-scaleout: build envtest-bin ## Three managers on a three-node NATS cluster; one replica and one NATS node killed mid-run.
	$(GO) test -tags scaleout -count=1 -timeout 15m -v ./test/scaleout/

# make soak's knobs (see docs/development.md, "Soak runs"); each is passed to the test as an environment variable.
SOAK_DURATION ?= 3m
SOAK_RATE ?= 1000
SOAK_IDS ?= true
SOAK_FAIL ?= 0.1
SOAK_OUTAGE ?= 0
SOAK_POLICY ?= default
SOAK_HEALTHY ?= false
SOAK_OUT ?= bin/soak/$(shell date +%Y%m%d-%H%M%S)
SOAK_TIMEOUT ?= 12h

.PHONY: soak
soak: build envtest-bin ## Soak bin/manager: SOAK_RATE events/s for SOAK_DURATION (default 1000/s, 3m); memory, disk and every event checked; report in SOAK_OUT.
	SOAK_MANAGER_BIN=$(LOCALBIN)/manager SOAK_DURATION=$(SOAK_DURATION) SOAK_RATE=$(SOAK_RATE) SOAK_IDS=$(SOAK_IDS) \
	SOAK_FAIL=$(SOAK_FAIL) SOAK_OUTAGE=$(SOAK_OUTAGE) SOAK_POLICY=$(SOAK_POLICY) SOAK_HEALTHY=$(SOAK_HEALTHY) SOAK_OUT=$(abspath $(SOAK_OUT)) \
	$(GO) test -tags soak -count=1 -timeout $(SOAK_TIMEOUT) -run '^TestSoak$$' -v ./test/soak/

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run golangci-lint with the linters chosen in .golangci.yml.
	$(GOLANGCI_LINT) run ./...

.PHONY: verify
verify: lint ## Lint, regenerate everything and fail if any generated file is stale or the code is not gofmt-clean.
	@$(MAKE) --no-print-directory manifests generate
	@test -z "$$(gofmt -s -l $$(git ls-files '*.go' | grep -v '^hack/envtest/'))" || { echo "gofmt: these files need 'make fmt':"; gofmt -s -l $$(git ls-files '*.go' | grep -v '^hack/envtest/'); exit 1; }
	@$(GO) mod tidy -diff >/dev/null || { echo "go.mod/go.sum are not tidy: run 'go mod tidy'"; exit 1; }
	@git diff --exit-code --stat -- api config charts docs || { echo "generated files are stale: run 'make manifests generate' and commit the result"; exit 1; }
	@test -z "$$(git status --porcelain --untracked-files=all -- api config charts)" || { echo "untracked generated files:"; git status --porcelain -- api config charts; exit 1; }
	@CGO_ENABLED=0 $(GO) build -trimpath -o /dev/null ./cmd/manager || { echo "the manager does not build without cgo, as the Dockerfile builds it"; exit 1; }

##@ Build

.PHONY: build
build: ## Build bin/manager, bin/kubectl-webhook and bin/webhook-receiver.
	hack/with-progress.sh manager $(GO) build -o $(LOCALBIN)/manager ./cmd/manager
	$(GO) build -o $(LOCALBIN)/kubectl-webhook ./cmd/kubectl-webhook
	$(GO) build -o $(LOCALBIN)/webhook-receiver ./cmd/webhook-receiver

CONTAINER_TOOL ?= docker

.PHONY: docker-build
docker-build: ## Build the manager image $(IMG) from the Dockerfile (needs a container engine).
	$(CONTAINER_TOOL) build -t $(IMG) .

.PHONY: docker-push
docker-push: ## Push the manager image $(IMG).
	$(CONTAINER_TOOL) push $(IMG)

.PHONY: dev
dev: ## Bring up a complete local system: control plane, CRD, manager with embedded NATS, demo receiver.
	@echo "make dev: building the manager, the plugin, etcd and kube-apiserver from Go modules, in parallel"
	@echo "  (the first run downloads and compiles for about $(DEV_FIRST_RUN) on 2 cores; later runs take seconds)"
	@$(MAKE) --no-print-directory -j3 build envtest-bin
	$(GO) build -o $(LOCALBIN)/wablast-dev ./hack/dev
	$(LOCALBIN)/wablast-dev

.PHONY: run
run: manifests generate ## Run the manager against the cluster in ~/.kube/config (or $$KUBECONFIG).
	$(GO) run ./cmd/manager

##@ Deployment

.PHONY: install
install: manifests ## Install the CRD into the cluster of the current kubeconfig.
	kubectl apply --server-side -f config/crd/bases

.PHONY: uninstall
uninstall: ## Remove the CRD (and every WebhookConfig) from the cluster of the current kubeconfig.
	kubectl delete --ignore-not-found -f config/crd/bases

.PHONY: build-installer
build-installer: manifests ## Write dist/install.yaml (namespace, CRD, RBAC, manager StatefulSet and Services) with the manager image IMG.
	@mkdir -p dist
	kubectl kustomize config/default | sed 's|image: ghcr.io/wablast/webhook-operator:.*|image: $(IMG)|' > dist/install.yaml
	@grep -q 'image: $(IMG)$$' dist/install.yaml || { echo "build-installer: the manager image was not set to $(IMG)"; exit 1; }

.PHONY: chart-lint
chart-lint: $(HELM) ## Lint the Helm chart and render it with good and bad values.
	$(HELM) lint --strict charts/webhook-operator
	$(HELM) template webhook-operator charts/webhook-operator >/dev/null
	$(HELM) template webhook-operator charts/webhook-operator --set nats.url=nats://nats:4222,nats.replicas=3,replicaCount=3 >/dev/null
	! $(HELM) template webhook-operator charts/webhook-operator --set replicaCount=2 >/dev/null 2>&1
	! $(HELM) template webhook-operator charts/webhook-operator --set replicaCount=abc >/dev/null 2>&1
	! $(HELM) template webhook-operator charts/webhook-operator --set unknownKey=1 >/dev/null 2>&1
	$(HELM) template webhook-operator charts/webhook-operator --set groupCommitDelay=0 | grep -q -- '--group-commit-delay=0$$'
	$(HELM) template webhook-operator charts/webhook-operator --set groupCommitDelay=2ms | grep -q -- '--group-commit-delay=2ms$$'
	! $(HELM) template webhook-operator charts/webhook-operator --set groupCommitDelay=fast >/dev/null 2>&1
	$(HELM) template webhook-operator charts/webhook-operator --set ingest.acceptAPIServerTokens=true | grep -q -- '--ingest-accept-apiserver-tokens$$'
	! $(HELM) template webhook-operator charts/webhook-operator | grep -q -- '--ingest-accept-apiserver-tokens'
	$(HELM) lint --strict charts/webhook-operator --set 'watchNamespaces={shop,billing}'
	$(HELM) template webhook-operator charts/webhook-operator --set 'watchNamespaces={shop,billing}' | grep -q -- '--watch-namespaces=shop,billing$$'
	test "$$($(HELM) template webhook-operator charts/webhook-operator --set 'watchNamespaces={shop,billing}' | grep -c '^kind: Role$$')" = 3
	! $(HELM) template webhook-operator charts/webhook-operator --set 'watchNamespaces={shop}' --set rbac.eventProducer.create=false,rbac.aggregateToDefaultRoles=false | grep -q '^kind: ClusterRole$$'
	! $(HELM) template webhook-operator charts/webhook-operator --set 'watchNamespaces={Not_A_Namespace}' >/dev/null 2>&1
	$(HELM) template webhook-operator charts/webhook-operator --kube-version 1.30.0 | grep -q '^kind: ValidatingAdmissionPolicy$$'
	! $(HELM) template webhook-operator charts/webhook-operator --kube-version 1.30.0 --set secretPolicy.enabled=false | grep -q '^kind: ValidatingAdmissionPolicy$$'
	! $(HELM) template webhook-operator charts/webhook-operator --kube-version 1.29.0 | grep -q '^kind: ValidatingAdmissionPolicy$$'
	! $(HELM) template webhook-operator charts/webhook-operator | grep -e '^kind: PrometheusRule$$' -e 'grafana_dashboard' >/dev/null
	$(HELM) lint --strict charts/webhook-operator --set metrics.prometheusRule.enabled=true,metrics.grafanaDashboard.enabled=true,metrics.serviceMonitor.enabled=true
	$(HELM) template webhook-operator charts/webhook-operator --set metrics.prometheusRule.enabled=true | grep '^kind: PrometheusRule$$' >/dev/null
	$(HELM) template webhook-operator charts/webhook-operator --set metrics.grafanaDashboard.enabled=true | grep '^    grafana_dashboard: "1"$$' >/dev/null
	$(HELM) template webhook-operator charts/webhook-operator --set metrics.grafanaDashboard.enabled=true | grep '"uid": "wablast-webhook-operator"' >/dev/null
	! $(HELM) template webhook-operator charts/webhook-operator --set metrics.prometheusRule.deliveryLagSeconds=0 >/dev/null 2>&1
	$(HELM) template webhook-operator charts/webhook-operator | grep -q -- '--ingest-review-rate-per-client=2$$'
	$(HELM) template webhook-operator charts/webhook-operator --set ingest.reviewLimits.rate=50,ingest.reviewLimits.burst=200 | grep -q -- '--ingest-review-burst=200$$'
	! $(HELM) template webhook-operator charts/webhook-operator --set ingest.reviewLimits.apiQPS=0 >/dev/null 2>&1

##@ Tools

.PHONY: envtest-bin
envtest-bin: $(ENVTEST_ASSETS)/kube-apiserver $(ENVTEST_ASSETS)/etcd ## Build envtest's etcd and kube-apiserver from Go modules into bin/k8s/<version>/.

$(ENVTEST_ASSETS)/kube-apiserver: hack/envtest/kube-apiserver/go.mod hack/envtest/kube-apiserver/main.go
	@mkdir -p $(ENVTEST_ASSETS)
	@echo "building kube-apiserver $(ENVTEST_K8S_VERSION) from Go modules (about 5 minutes the first time)"
	cd hack/envtest/kube-apiserver && ../../with-progress.sh kube-apiserver $(GO) build -o $@ .

$(ENVTEST_ASSETS)/etcd: hack/envtest/etcd/go.mod hack/envtest/etcd/main.go
	@mkdir -p $(ENVTEST_ASSETS)
	@echo "building etcd from Go modules"
	cd hack/envtest/etcd && ../../with-progress.sh etcd $(GO) build -o $@ .

# promtool is not a Go module one can build with `go install` at a pinned
# version without pulling in all of Prometheus; Debian's prometheus package
# ships it. Tests that need it fail (never skip) when it is missing.
PROMTOOL ?= /usr/bin/promtool

.PHONY: promtool
promtool: ## Install promtool (Debian's prometheus package) when it is missing; needs root, as CI has.
	@test -x $(PROMTOOL) || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; }
	@$(PROMTOOL) --version 2>&1 | head -1

# Chromium drives the page of "kubectl webhook ui" in test/ui (chromedp).
# Debian's package, as for promtool: no browser is downloaded by the build.
# The test fails (never skips) when it is missing.
CHROMIUM ?= /usr/bin/chromium

.PHONY: chromium
chromium: ## Install Chromium (Debian's chromium package) when it is missing; needs root, as CI has. make test-ui drives it.
	@test -x $(CHROMIUM) || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; }
	@$(CHROMIUM) --version 2>/dev/null | head -1

.PHONY: helm
helm: $(HELM) ## Build helm from Go modules into bin/.

$(HELM):
	@mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	mv $(LOCALBIN)/helm $@

$(GOLANGCI_LINT):
	@mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv $(LOCALBIN)/golangci-lint $@

$(OPENAPI_GEN):
	@mkdir -p $(LOCALBIN)
	cd $$(mktemp -d) && GOBIN=$(LOCALBIN) GOFLAGS=-mod=mod $(GO) install k8s.io/kube-openapi/cmd/openapi-gen@$(OPENAPI_GEN_VERSION)
	mv $(LOCALBIN)/openapi-gen $@

$(CONTROLLER_GEN):
	@mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) $(GO) install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
	mv $(LOCALBIN)/controller-gen $@
