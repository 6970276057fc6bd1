# Tools written in Python and JavaScript (included by the Makefile).
#
# Each example-tools/py-NAME/ (an `app.py` module) is built with
# componentize-py and each example-tools/js-NAME/ (a `main.js` ES module) with
# componentize-js, against `toolhost:tool@0.1.0` (wit/0.1.0/tool.wit: tools only; the Rust
# SDK builds 0.2.0),
# into $(LANG_OUT)/; `make tools` then deploys them like the Rust ones:
# build/tools/NAME.wasm with its manifest rendered (sha256 pinned), the
# hostile fixtures into build/test-tools/. A component is rebuilt only when
# its sources, the SDK, the WIT or the toolchain changed.

TOOLCHAINS       ?= .toolchains
TOOLCHAINS_STAMP := $(TOOLCHAINS)/installed
COMPONENTIZE_PY  := $(TOOLCHAINS)/py/bin/componentize-py
COMPONENTIZE_JS  := $(TOOLCHAINS)/js/node $(TOOLCHAINS)/js/node_modules/@bytecodealliance/componentize-js/src/cli.js
# Fixed under target/ (like the Rust guests in target/artifacts/): the tests
# read the components from there.
LANG_OUT         := target/lang-tools

PY_DEPLOY := py-echo py-text
PY_TEST   := py-hostile
JS_DEPLOY := js-echo js-text
JS_TEST   := js-hostile
LANG_COMPONENTS := $(addprefix $(LANG_OUT)/,$(addsuffix .wasm,$(PY_DEPLOY) $(PY_TEST) $(JS_DEPLOY) $(JS_TEST)))

PY_SDK := $(wildcard guest-sdk/python/toolhost_guest/*.py)
JS_SDK := $(wildcard guest-sdk/js/*.js)

.PHONY: guest-toolchains lang-tools lang-components

## guest-toolchains: install the pinned componentize-py and componentize-js into .toolchains/.
guest-toolchains: $(TOOLCHAINS_STAMP)
$(TOOLCHAINS_STAMP): scripts/install-guest-toolchains.sh scripts/lib-install.sh scripts/locks/guest-py.txt scripts/locks/guest-js/package-lock.json
	bash scripts/install-guest-toolchains.sh $(TOOLCHAINS)

## lang-tools: build and deploy the Python and JavaScript tools (part of `make tools`).
tools: lang-tools
lang-tools: $(TOOLCHAINS_STAMP)
	@# Both cores: each componentizer is mostly single-threaded.
	@$(MAKE) --no-print-directory -j2 lang-components
	@set -e; $(foreach t,$(PY_DEPLOY) $(JS_DEPLOY),$(call lang_install,$(t),$(BUILD)/tools); $(call render_manifest,$(t),$(BUILD)/tools);)
	@set -e; $(foreach t,$(PY_TEST) $(JS_TEST),$(call lang_install,$(t),$(BUILD)/test-tools);)

lang-components: $(LANG_COMPONENTS)

.SECONDEXPANSION:
# VIRTUAL_ENV points componentize-py at the toolchain's own venv, so no
# site-packages of the machine's Python leak into the component's path.
$(LANG_OUT)/py-%.wasm: $$(wildcard example-tools/py-$$*/*.py) $(PY_SDK) wit/0.1.0/tool.wit $(TOOLCHAINS_STAMP)
	@mkdir -p $(@D)
	@echo "  componentize-py example-tools/py-$*"
	@VIRTUAL_ENV=$(abspath $(TOOLCHAINS)/py) PYTHONDONTWRITEBYTECODE=1 $(COMPONENTIZE_PY) -d wit/0.1.0 -w toolhost \
		componentize -p guest-sdk/python -p example-tools/py-$* app -o $@.tmp >$@.log 2>&1 \
		|| { cat $@.log >&2; rm -f $@.tmp; exit 1; }
	@mv -f $@.tmp $@

# componentize-js maps the current directory into the build sandbox: run it
# from the project root so `../../guest-sdk/js/...` imports resolve.
$(LANG_OUT)/js-%.wasm: $$(wildcard example-tools/js-$$*/*.js) $(JS_SDK) wit/0.1.0/tool.wit $(TOOLCHAINS_STAMP)
	@mkdir -p $(@D)
	@echo "  componentize-js example-tools/js-$*"
	@$(COMPONENTIZE_JS) example-tools/js-$*/main.js --wit wit/0.1.0 -n toolhost -o $@.tmp >$@.log 2>&1 \
		|| { cat $@.log >&2; rm -f $@.tmp; exit 1; }
	@mv -f $@.tmp $@

# $(call lang_install,NAME,DIR): copy $(LANG_OUT)/NAME.wasm to DIR/NAME.wasm,
# atomically and only when its bytes changed (like `install_wasm`).
lang_install = src=$(LANG_OUT)/$(1).wasm dst=$(2)/$(1).wasm; \
	test "$$(head -c 8 $$src | od -An -tx1 | tr -d ' \n')" = $(COMPONENT_MAGIC) \
		|| { echo "$$src is not a WebAssembly component" >&2; exit 1; }; \
	mkdir -p $(2); \
	cmp -s $$src $$dst || { cp $$src $(2)/.$(1).wasm.tmp && mv -f $(2)/.$(1).wasm.tmp $$dst && echo "  installed $$dst"; }

## guest-sdk-test: unit tests of the Python and JavaScript guest SDKs (plain CPython, Node).
.PHONY: guest-sdk-test
test: guest-sdk-test
guest-sdk-test:
	PYTHONDONTWRITEBYTECODE=1 python3 -m unittest discover -s guest-sdk/python/tests
	node --test guest-sdk/js/test/
