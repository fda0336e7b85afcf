# Azora — every install step lives here (idempotent, cached), so a fresh clone needs only
# Python 3.11+, Go 1.25+ (for the local control plane), make, and optionally PostgreSQL.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

UV_VERSION  ?= 0.9.30
CACHE_DIR   ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/azora
UV_HOME     := $(CACHE_DIR)/uv-$(UV_VERSION)
UV          := $(shell command -v uv 2>/dev/null || echo $(UV_HOME)/bin/uv)
PYTHON      ?= python3
PYTEST_ARGS ?=
export UV_PYTHON_DOWNLOADS := never

.PHONY: help
help: ## list targets
	@grep -hE '^[a-z][a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(UV_HOME)/bin/uv:
	@echo "[make] installing uv $(UV_VERSION) into $(UV_HOME)"
	$(PYTHON) -m venv $(UV_HOME)
	$(UV_HOME)/bin/pip install --quiet "uv==$(UV_VERSION)"

.PHONY: uv
uv: $(if $(filter $(UV_HOME)/bin/uv,$(UV)),$(UV_HOME)/bin/uv) ## ensure uv exists

.PHONY: sync
sync: uv ## install the Python environment from uv.lock
	$(UV) sync --frozen --all-packages

.PHONY: tools
tools: ## build etcd, kube-apiserver, kubectl and helm from Go modules (cached)
	bash hack/build-tools.sh

.PHONY: kube-tools
kube-tools: ## tools + what a real node needs: kubelet, kube-proxy, controller-manager, scheduler, CoreDNS
	bash hack/build-tools.sh --node

.PHONY: system-deps
system-deps: ## Debian packages the tests use (promtool, buildah, containerd, runc, CNI...) when missing
	bash hack/system-deps.sh

.PHONY: lint
lint: sync ## ruff + mypy --strict + import contracts
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy
	$(UV) run lint-imports

.PHONY: test
test: sync kube-tools system-deps lint ## the full test suite (real PostgreSQL, real kube-apiserver, a real node)
	$(UV) run pytest $(PYTEST_ARGS)

.PHONY: fuzz
FUZZ_SERVICES ?= enrollment ledger pricing orchestrator
fuzz: sync ## deep API fuzzing, one service after another (schemathesis: every check, stateful links, 300 examples/operation; FUZZ_SERVICES=ledger); counts in .local/fuzz/
	@failed=; for s in $(FUZZ_SERVICES); do \
	  AZORA_FUZZ=deep AZORA_FUZZ_SERVICES=$$s AZORA_FUZZ_OUT=.local/fuzz $(UV) run pytest tests/fuzz -s -p no:cacheprovider $(PYTEST_ARGS) || failed="$$failed $$s"; \
	done; \
	for s in $(FUZZ_SERVICES); do $(UV) run python -m tests.fuzz.summary .local/fuzz/$$s.json; done; \
	if [ -n "$$failed" ]; then echo "fuzz failed:$$failed"; exit 1; fi

.PHONY: bench
bench: sync tools ## benchmarks, shared method (bench/harness); results under bench/results/ (AREAS="ledger pricing", SMOKE=1)
	bash hack/system-deps.sh --bench
	BENCH_AREAS="$(AREAS)" BENCH_SMOKE="$(SMOKE)" $(UV) run python bench/run_all.py

.PHONY: up
up: sync tools ## run the whole platform locally (background; Prometheus included); writes .local/azora.env
	bash hack/system-deps.sh --up
	$(UV) run python hack/local.py up

.PHONY: down
down: ## stop everything `make up` started
	@if [ -x .venv/bin/python ]; then .venv/bin/python hack/local.py down; else echo "nothing to stop"; fi

.PHONY: status
status: ## show what runs
	@if [ -x .venv/bin/python ]; then .venv/bin/python hack/local.py status; else echo "not set up"; fi

.PHONY: demo
demo: ## a guided tour of the running platform (after `make up`; hack/demo.py)
	@if [ -x .venv/bin/python ]; then .venv/bin/python hack/demo.py; else echo "run \`make up\` first"; fi

.PHONY: cluster
cluster: sync tools ## only the local control plane (etcd + kube-apiserver); writes .local/kubeconfig
	$(UV) run python hack/local.py up --only cluster

.PHONY: images
images: sync system-deps ## build every image with buildah (no Docker engine needed)
	bash hack/images.sh build all

.PHONY: kube-up
kube-up: sync kube-tools system-deps ## a real single-node cluster (containerd, kubelet...), images, helm install; writes .local/kube/kube.env
	$(UV) run python hack/kube.py up

.PHONY: kube-down
kube-down: ## stop the `make kube-up` cluster and remove everything it made (processes, bridge, chains, mounts, state)
	@if [ -x .venv/bin/python ]; then .venv/bin/python hack/kube.py down; else echo "nothing to stop"; fi

.PHONY: kube-status
kube-status: ## show the `make kube-up` cluster's nodes and pods
	@if [ -x .venv/bin/python ]; then .venv/bin/python hack/kube.py status; else echo "not set up"; fi

.PHONY: kind-up
kind-up: ## on a machine with Docker: kind cluster, images loaded, helm install
	bash hack/kind-up.sh

.PHONY: kind-down
kind-down: ## delete the kind cluster
	bash hack/kind-down.sh

.PHONY: openapi
openapi: sync ## regenerate docs/api/*.json from the apps
	$(UV) run python hack/export_openapi.py

.PHONY: clean
clean: down ## remove local state (.local/) and caches in the tree
	rm -rf .local .mypy_cache .ruff_cache .pytest_cache
