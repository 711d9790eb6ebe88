# Keyway — the two commands are `make run` and `make test`; see README.md.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

TOOL    := scripts/tool.sh
# Main packages; each binary is named after its folder.
COMMANDS := ./services/policy/cmd/keyway-policy ./services/proxy/cmd/keyway-proxy \
            ./services/secrets/cmd/keyway-secrets \
            ./services/devstack/cmd/keyway-dev ./cmd/keywayctl

# Every Go module of the workspace (go.work).
MODULES := gen internal services/policy services/proxy services/secrets services/devstack cmd/keywayctl tests

# How long each fuzz target runs: briefly in `make test`, longer in `make fuzz`.
TESTFUZZTIME ?= 5s
FUZZTIME     ?= 1m

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

.PHONY: tools
tools: ## install the pinned tools into the cache (scripts/tool.sh) and the Debian packages the tests use (scripts/debian.sh); Vault takes about 20 minutes the first time
	@for t in buf protoc-gen-go protoc-gen-connect-go protoc-gen-go-grpc golangci-lint govulncheck nats-server vault; do $(TOOL) $$t >/dev/null; done
	@scripts/debian.sh nginx-light chromium

.PHONY: build
build: ## build every binary into bin/
	@mkdir -p bin
	@echo "building into bin/: $(notdir $(COMMANDS)) (go build -v lists each package it compiles)"
	@# The version and commit go in with -X as well: the toolchain stamps
	@# vcs.* only from a checkout whose .git is a folder (not a worktree) and
	@# when GOFLAGS has no -buildvcs=false (internal/version).
	@go build -v -trimpath -ldflags "$$(scripts/version.sh ldflags)" -o bin/ $(COMMANDS)

.PHONY: images
images: ## one OCI image per binary FROM scratch with buildah (static, user 65532, no shell) into images/NAME.tar, then check them
	@scripts/images.sh
	@go test -count=1 -run '^TestImages$$' ./tests/e2e/

.PHONY: generate
generate: ## regenerate gen/ from proto/ with buf and the pinned local plugins
	@plugins="$$(dirname "$$($(TOOL) protoc-gen-go)"):$$(dirname "$$($(TOOL) protoc-gen-connect-go)"):$$(dirname "$$($(TOOL) protoc-gen-go-grpc)")"; \
	buf="$$($(TOOL) buf)"; \
	find gen -name '*.go' -delete; \
	PATH="$$plugins:$$PATH" "$$buf" generate

.PHONY: lint
lint: ## buf lint and breaking (against main), the deploy/ NATS configuration, golangci-lint over every module, gofmt, govulncheck (docs/reference/checks.md)
	@"$$($(TOOL) buf)" lint
	@scripts/buf-breaking.sh
	@# nats-server -t loads the TLS files and the users' passwords: give it a
	@# throwaway certificate in place of /etc/nats/tls/ and placeholder passwords.
	@tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=nats -days 1 \
		-keyout "$$tmp/tls.key" -out "$$tmp/tls.crt" 2>/dev/null && cp "$$tmp/tls.crt" "$$tmp/ca.crt" || exit 1; \
	for conf in deploy/nats/nats-server.conf deploy/kubernetes/nats/nats-server.conf; do \
		sed "s#/etc/nats/tls/#$$tmp/#g" "$$conf" > "$$tmp/nats-server.conf"; \
		out="$$(POD_NAME=nats-0 NATS_POLICY_PASSWORD=lint NATS_SECRETS_PASSWORD=lint NATS_NODE_PASSWORD=lint \
			"$$($(TOOL) nats-server)" -t -c "$$tmp/nats-server.conf" 2>&1)" || { echo "$$conf: $$out"; exit 1; }; \
	done
	@# go vet's analyzers run inside golangci-lint (govet), with the rest of .golangci.yml.
	@scripts/golangci.sh $(MODULES)
	@# deploy/ stays out of go.work (the Kubernetes libraries): linted on its own.
	@GOWORK=off scripts/golangci.sh deploy
	@out="$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/'))"; if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	@scripts/vulncheck.sh

.PHONY: check-generated
check-generated: generate ## fail when gen/ differs from what proto/ generates
	@if [ -n "$$(git status --porcelain -- gen)" ]; then \
	  echo "gen/ is out of date with proto/: run 'make generate' and commit the result:"; \
	  git status --porcelain -- gen; git --no-pager diff --stat -- gen; exit 1; fi

.PHONY: test
test: tools check-generated lint build deploy-check ## everything CI runs: generated-code check, lint, deploy check, unit, integration and end-to-end tests, then each fuzz target for TESTFUZZTIME (5s)
	@KEYWAY_BIN="$(CURDIR)/bin" KEYWAY_NATS_SERVER="$$($(TOOL) nats-server)" KEYWAY_VAULT="$$($(TOOL) vault)" KEYWAY_REQUIRE_CHROMIUM=1 \
	  go test -race -count=1 -timeout 30m $(TESTFLAGS) $(addprefix ./,$(addsuffix /...,$(MODULES)))
	@# deploy/ is a module outside the workspace (the Kubernetes libraries stay
	@# out of the services' builds): its full tier runs the manifests as
	@# processes (deploy/localrun).
	@nats="$$($(TOOL) nats-server)" vault="$$($(TOOL) vault)"; cd deploy && GOWORK=off KEYWAY_BIN="$(CURDIR)/bin" KEYWAY_NATS_SERVER="$$nats" KEYWAY_VAULT="$$vault" \
	  go test -race -count=1 -timeout 10m $(TESTFLAGS) ./...
	@scripts/fuzz.sh $(TESTFUZZTIME)

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME each (default 1m; make fuzz FUZZTIME=10m); failing inputs land in testdata/fuzz/
	@scripts/fuzz.sh $(FUZZTIME)

.PHONY: test-fast
test-fast: ## the unit tier: go test -short over every module; no Vault, no built binaries, no child processes of ours (make test runs those)
	@go test -short -count=1 $(TESTFLAGS) $(addprefix ./,$(addsuffix /...,$(MODULES)))

.PHONY: deploy-check
deploy-check: ## render deploy/kubernetes with kustomize and validate every object, compose.yaml and Vault's HCL, offline
	@cd deploy && GOWORK=off go vet ./... && GOWORK=off go test -short -count=1 ./...

.PHONY: run
run: build ## start the local stack in the foreground (NATS, policy service, proxy node, demo upstream)
	@exec bin/keyway-dev --bin bin --data .keyway

.PHONY: prod-local
prod-local: build ## the production topology from deploy/kubernetes as local processes (3 NATS, 3 Vault on raft, 2 secrets, 2 policy, 3 proxies, mTLS); prints how to use it; Ctrl-C stops it
	@nats="$$($(TOOL) nats-server)" vault="$$($(TOOL) vault)"; cd deploy && \
	  GOWORK=off go run ./cmd/prod-local --bin "$(CURDIR)/bin" --dir "$(CURDIR)/.keyway/prod-local" --nats-server "$$nats" --vault "$$vault"

.PHONY: bench
bench: build ## throughput, p99 and propagation benchmarks (figures in the output)
	@KEYWAY_BIN="$(CURDIR)/bin" KEYWAY_NATS_SERVER="$$($(TOOL) nats-server)" \
	  go test -run '^$$' -bench . -benchtime 1x -count 1 -timeout 30m ./tests/bench/...

# The peers harness (NGINX and HAProxy doing Keyway's job on this machine).
PEERS      ?= ../shared/peers
ROUNDS     ?= 3
QUIET_WAIT ?= 30
RETRIES    ?= 0
.PHONY: bench-peers
bench-peers: build ## Keyway beside NGINX and HAProxy in one run of ../shared/peers (PEERS, ROUNDS, QUIET_WAIT, RETRIES, KEYWAY_BIN); summary in bin/bench-peers/summary.md
	@PEERS="$(PEERS)" ROUNDS="$(ROUNDS)" QUIET_WAIT="$(QUIET_WAIT)" RETRIES="$(RETRIES)" scripts/bench-peers.sh

.PHONY: clean
clean: ## remove bin/ and the local stack's data
	rm -rf bin .keyway
