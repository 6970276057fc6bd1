# toolhost: build, tools, test, bench, run.

# `--locked`: builds, tests and benches take exactly the crates Cargo.lock
# names (with their checksums), never a newer one resolved on the way;
# added to a `CARGO` from the environment too (cargo sets one for what it
# runs).
CARGO       ?= cargo
ifeq ($(filter --locked,$(CARGO)),)
override CARGO := $(CARGO) --locked
endif
WASM_TARGET := wasm32-wasip2
# Where cargo puts the guest builds (honours CARGO_TARGET_DIR). The same
# directory the `artifacts` crate's build script uses, so `make tools` and
# `cargo test` compile each guest once.
TARGET_DIR  ?= $(or $(CARGO_TARGET_DIR),target)
TOOLS_BUILD := target/artifacts/$(WASM_TARGET)/tools
BUILD       := build

# Tools deployed with a manifest into build/tools/.
DEPLOY_TOOLS := echo text files writer fetch prompts
# Fixtures for the tests, deployed without a manifest (tests write their own).
TEST_TOOLS   := hostile hostile-describe typed-kitchen-sink
# Conformance fixtures, when their crate exists.
CONFORMANCE  := $(if $(wildcard example-tools/conformance/Cargo.toml),conformance)

ALL_TOOLS := $(DEPLOY_TOOLS) $(TEST_TOOLS) $(CONFORMANCE)

.PHONY: setup tools

## setup: install what the build needs beyond a Rust toolchain.
setup:
	rustup target add $(WASM_TARGET)

# The first 8 bytes of a WebAssembly component (a core module has 01 00 00 00).
COMPONENT_MAGIC := 0061736d0d000100

# $(call install_wasm,NAME,DIR): check that the built NAME is a component and
# copy it to DIR/NAME.wasm, atomically and only when its bytes changed.
install_wasm = src=$(TOOLS_BUILD)/toolhost_tool_$(subst -,_,$(1)).wasm dst=$(2)/$(1).wasm; \
	test "$$(head -c 8 $$src | od -An -tx1 | tr -d ' \n')" = $(COMPONENT_MAGIC) \
		|| { echo "$$src is not a WebAssembly component" >&2; exit 1; }; \
	mkdir -p $(2); \
	cmp -s $$src $$dst || { cp $$src $(2)/.$(1).wasm.tmp && mv -f $(2)/.$(1).wasm.tmp $$dst && echo "  installed $$dst"; }

# $(call render_manifest,NAME,DIR): render example-tools/NAME/NAME.toml into
# DIR/NAME.toml, @SHA256@ replaced by DIR/NAME.wasm's digest; rewritten
# atomically and only when it changed.
render_manifest = sha=$$(sha256sum $(2)/$(1).wasm | cut -d' ' -f1); test -n "$$sha"; \
	sed "s/@SHA256@/$$sha/" example-tools/$(1)/$(1).toml > $(2)/.$(1).toml.tmp; \
	if cmp -s $(2)/.$(1).toml.tmp $(2)/$(1).toml; then rm -f $(2)/.$(1).toml.tmp; \
	else mv -f $(2)/.$(1).toml.tmp $(2)/$(1).toml && echo "  rendered $(2)/$(1).toml"; fi

## tools: build every tool component and deploy it under build/.
tools:
	$(CARGO) build --profile tools --target $(WASM_TARGET) --target-dir target/artifacts $(addprefix -p toolhost-tool-,$(ALL_TOOLS))
	@set -e; $(foreach t,$(DEPLOY_TOOLS),$(call install_wasm,$(t),$(BUILD)/tools); $(call render_manifest,$(t),$(BUILD)/tools);)
	@set -e; $(foreach t,$(TEST_TOOLS),$(call install_wasm,$(t),$(BUILD)/test-tools);)
	@set -e; $(foreach t,$(CONFORMANCE),$(call install_wasm,$(t),$(BUILD)/conformance-tools); \
		$(if $(wildcard example-tools/$(t)/$(t).toml),$(call render_manifest,$(t),$(BUILD)/conformance-tools);))
	@mkdir -p $(BUILD)/out

## deploy-tools: the Rust example tools only, deployed into build/tools/
## (what the container image ships: deploy/Containerfile).
.PHONY: deploy-tools
deploy-tools:
	$(CARGO) build --profile tools --target $(WASM_TARGET) --target-dir target/artifacts $(addprefix -p toolhost-tool-,$(DEPLOY_TOOLS))
	@set -e; $(foreach t,$(DEPLOY_TOOLS),$(call install_wasm,$(t),$(BUILD)/tools); $(call render_manifest,$(t),$(BUILD)/tools);)

## check-deploy: validate deploy/kubernetes/ against the Kubernetes API
## schemas (kubernetes-validate, pinned, from `make test-deps`) and
## deploy/nginx/ with `nginx -t`; and load the sample host config and the
## Deployment's --tools with the host (needs `make tools` and the debug
## binary, which `make test` builds first).
.PHONY: check-deploy
check-deploy:
	TOOLHOST=$(TARGET_DIR)/debug/toolhost REQUIRE_HOST=1 bash scripts/check-deploy.sh

# Tools in Python and JavaScript: `tools` depends on `lang-tools`.
include scripts/languages.mk

## claude-cli: install the pinned claude CLI into .claude-cli/ (the agent tests use it).
.PHONY: claude-cli
claude-cli:
	bash scripts/install-claude-cli.sh

## build: the host binary (target/release/toolhost) and every tool.
.PHONY: build demo test test-rust bench help
build: setup tools
	$(CARGO) build --release -p toolhost

## demo: the main job: load the example tools, call them, watch the sandbox refuse.
demo: build
	bash scripts/demo.sh target/release/toolhost $(BUILD)/tools

## test: everything CI runs: unit and integration tests (real components,
## real MCP clients, the real claude CLI), then the MCP conformance suite.
# The conformance suites run against the binary `cargo test` built (a
# separate `cargo build -p toolhost-cli` resolves features without the
# dev-dependencies and would rebuild the library). The checks after it
# build the dependencies in check mode, once per feature set; RUSTC_BOOTSTRAP
# reaches only rustdoc (see check-api), so it adds no feature set of its own.
test: setup tools test-deps
	$(CARGO) test --workspace --no-fail-fast
	$(MAKE) --no-print-directory test-agent-newest
	$(MAKE) --no-print-directory conformance-run
	$(MAKE) --no-print-directory check-deploy
	$(MAKE) --no-print-directory check-api
	$(MAKE) --no-print-directory check-docs
	$(MAKE) --no-print-directory check-features
	$(MAKE) --no-print-directory check-package

## check-docs: the libraries' rustdoc has no warnings (broken or private
## links; missing docs are denied by the crates themselves). toolhost's own
## rustdoc runs, with -D warnings, in check-api.
.PHONY: check-docs
check-docs:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc -q -p toolhost-package --no-deps

## check-api: the library's public API is what host/public-api.txt says
## (rustdoc JSON from the stable toolchain, listed by scripts/public-api.py):
## an accidental export fails here and shows in review. The same rustdoc run
## denies rustdoc's warnings (broken or private links).
.PHONY: check-api public-api
API_JSON := $(TARGET_DIR)/doc/toolhost.json
$(API_JSON).stamp: FORCE
	RUSTDOC=$(CURDIR)/scripts/rustdoc-unstable.sh $(CARGO) rustdoc -q -p toolhost --lib -- -D warnings -Z unstable-options --output-format json
check-api: $(API_JSON).stamp
	@python3 scripts/public-api.py $(API_JSON) | diff -u host/public-api.txt - \
		|| { echo "the public API of toolhost changed (above): if that is meant, run \`make public-api\` and commit host/public-api.txt" >&2; exit 1; }
	@echo "public API: as host/public-api.txt ($$(wc -l < host/public-api.txt) items)"
## public-api: rewrite host/public-api.txt from the code.
public-api: $(API_JSON).stamp
	python3 scripts/public-api.py $(API_JSON) > host/public-api.txt
.PHONY: FORCE
FORCE:

## check-package: each publishable crate packages with what it needs (the
## WIT contract comes in through the `wit` links of host/ and guest-sdk/);
## the guest SDK's package builds on its own. `make package` builds every
## package (a full build: too slow for every CI run).
PUBLISHED := toolhost toolhost-guest toolhost-package toolhost-cli
.PHONY: check-package package
check-package:
	@set -e; for p in $(PUBLISHED); do \
		$(CARGO) package -q --allow-dirty --list -p $$p > /dev/null; done
	@$(CARGO) package -q --allow-dirty --list -p toolhost | grep -qx 'wit/tool.wit'
	@$(CARGO) package -q --allow-dirty --list -p toolhost-guest | grep -qx 'wit/tool.wit'
	$(CARGO) package -q --allow-dirty -p toolhost-guest
## package: the .crate files under target/package/, each built from its
## package (cargo packages the four together, so the ones that depend on
## toolhost resolve it from its package, not from crates.io).
package:
	$(CARGO) package --allow-dirty $(addprefix -p ,$(PUBLISHED))

## check-features: the library builds with each front end alone (an
## embedder may turn the default features off).
.PHONY: check-features
check-features:
	$(CARGO) check -p toolhost --no-default-features
	$(CARGO) check -p toolhost --no-default-features --features mcp
	$(CARGO) check -p toolhost --no-default-features --features agent
	$(CARGO) check -p toolhost --no-default-features --features watch
	$(CARGO) check -p toolhost-cli --no-default-features

## test-agent-newest: the agent end-to-end tests (the real `claude` CLI
## against a mock model on 127.0.0.1) again, against the newest CLI npm
## serves: the main suite runs them against the pinned one. `--workspace`
## resolves features as `make test` did, so the test binary it built is run
## again (`-p toolhost-cli` alone would rebuild wasmtime and more).
.PHONY: test-agent-newest
test-agent-newest:
	bash scripts/install-claude-cli.sh $(CURDIR)/.claude-cli-newest latest
	TOOLHOST_CLAUDE_CLI=$(CURDIR)/.claude-cli-newest/node_modules/.bin/claude \
		$(CARGO) test --workspace --test integration -- agent

## test-rust: the Rust tests only (no conformance suite).
test-rust: setup tools
	$(CARGO) test --workspace --no-fail-fast

## fuzz: each fuzz target (host/fuzz/) for FUZZ_SECONDS (default 120) in
## turn, on stable: random inputs plus the committed corpus. `cargo test`
## runs the same targets for a few seconds each. Coverage-guided, with
## nightly and cargo-bolero: `cargo +nightly bolero test -p toolhost-fuzz
## --test fuzz TARGET` (TARGET as listed in FUZZ_TARGETS).
FUZZ_SECONDS ?= 120
FUZZ_TARGETS := manifest::manifest config::host_config mcp::mcp_jsonrpc http::mcp_http agent::agent_control component::component_load
.PHONY: fuzz
fuzz: setup
	$(CARGO) test -p toolhost-fuzz --test fuzz --no-run
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
		BOLERO_RANDOM_TEST_TIME_MS=$$(( $(FUZZ_SECONDS) * 1000 )) \
			$(CARGO) test -q -p toolhost-fuzz --test fuzz -- --exact $$t --nocapture; \
	done

## test-deps: the pinned real peers the tests drive (MCP SDK clients,
## conformance suite, claude CLI) installed under the project, and the OCI
## registry, skopeo and nginx the package and scale-out tests start (pinned
## Debian packages: needs root or sudo).
.PHONY: test-deps
test-deps:
	bash scripts/install-test-deps.sh
	bash scripts/install-claude-cli.sh
	bash scripts/install-registry.sh
	bash scripts/install-nginx.sh

## bench: the benchmarks; each prints a table (see BENCHMARKS.md).
# The agent bench compares with the Python Claude Agent SDK as locked in
# scripts/locks/bench.txt (the newest on PyPI when it was last measured,
# hashes checked); a venv made for an older lock is brought to it.
# `make bench AGENT_SDK_VERSION=X` measures another version, unlocked.
bench: setup tools
	$(CARGO) bench -p toolhost --features unstable-bench --bench sandbox
	$(CARGO) bench -p toolhost-cli --bench mcp
	$(CARGO) bench -p toolhost-cli --bench noisy
	$(CARGO) bench -p toolhost-cli --bench startup
	$(CARGO) bench -p toolhost --features unstable-bench --bench languages
	$(CARGO) bench -p toolhost --bench inflight
	@if [ -n "$(AGENT_SDK_VERSION)" ]; then \
		test -x .venv-bench/bin/python || python3 -m venv .venv-bench; \
		.venv-bench/bin/pip install -q --disable-pip-version-check claude-agent-sdk==$(AGENT_SDK_VERSION); \
	else \
		bash -c 'source scripts/lib-install.sh && pip_locked .venv-bench bench'; \
	fi
	TOOLHOST_BENCH_PYTHON=$(CURDIR)/.venv-bench/bin/python $(CARGO) bench -p toolhost --features agent --bench agent_control -- 3000

## soak: a million calls through one `toolhost serve --http` (two tenants,
## stateless and session clients, refused calls, the audit log rotating),
## the server's RSS, descriptors and threads sampled as they go
## (BENCHMARKS.md, "Soak"). SOAK_CALLS overrides the count.
SOAK_CALLS ?= 1000000
.PHONY: soak
soak: setup tools
	$(CARGO) bench -p toolhost-cli --bench soak -- $(SOAK_CALLS)

## bench-install: install time from a real OCI registry vs a local file
## (needs scripts/install-registry.sh).
.PHONY: bench-install
bench-install: tools
	bash scripts/install-registry.sh
	$(CARGO) build --release -p toolhost-cli
	bash scripts/bench-install.sh $(TARGET_DIR)/release/toolhost

help:
	@grep -E '^## ' Makefile | sed 's/^## /  /'

## conformance: the MCP conformance suites (0.2.0-alpha.12 --requirements
## 2026-07-28, and 0.1.16 --suite all) against `toolhost serve --http`
## (expected failures, each with its reason: tests/conformance/expected-failures-*.yml).
.PHONY: conformance
conformance: tools
	$(CARGO) build -p toolhost-cli
	$(MAKE) --no-print-directory conformance-run
# The suites against the binary as it is (make test: built by `cargo test`).
.PHONY: conformance-run
conformance-run:
	bash scripts/conformance.sh $(TARGET_DIR)/debug/toolhost
