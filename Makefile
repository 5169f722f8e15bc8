# app_elevenlabs_convai: the Asterisk module and the pyconvai runtime it embeds.
#
#   make            build the module, its XML documentation and the pyconvai wheel
#   make install    install them (module, docs, virtual environment, sample config)
#   make deb        the Debian package asterisk-elevenlabs-convai (debian/), in build/deb/
#   make test       everything the tests need, then the tests (provisions a test bed)
#   make bench      benchmark figures into BENCHMARKS.md (not part of make test)
#   make fuzz       the protocol and downlink fuzzers, far longer than make test runs them
#   make asan-test  the end-to-end call tests against the module built with AddressSanitizer
#   make demo       one call through Asterisk to the bundled agent simulator, printed live
#
# Every path is discovered from the installed Asterisk and can be overridden:
#   make install DESTDIR=/tmp/stage ASTMODDIR=... ASTDATADIR=... ASTETCDIR=... VENVDIR=...
# With no Asterisk headers on this machine, "make" builds inside the test bed
# (a Debian sid root with Asterisk 22, see tests/testbed/).

PYTHON ?= python3
PYTHON_CONFIG ?= $(PYTHON)-config
CC ?= gcc

ASTETCDIR ?= /etc/asterisk
asterisk_dir = $(shell sed -n 's/^[[:space:]]*$(1)[[:space:]]*=>*[[:space:]]*//p' $(ASTETCDIR)/asterisk.conf 2>/dev/null | head -n 1)
MULTIARCH := $(shell $(CC) -print-multiarch 2>/dev/null)
ASTINCDIR ?= $(firstword $(patsubst %/asterisk.h,%,$(wildcard /usr/include/asterisk.h /usr/local/include/asterisk.h)))
ASTMODDIR ?= $(or $(call asterisk_dir,astmoddir),$(firstword $(wildcard /usr/lib/$(MULTIARCH)/asterisk/modules /usr/lib64/asterisk/modules /usr/lib/asterisk/modules)),/usr/lib/asterisk/modules)
ASTDATADIR ?= $(or $(call asterisk_dir,astdatadir),$(firstword $(wildcard /usr/share/asterisk /var/lib/asterisk)),/var/lib/asterisk)
VENVDIR ?= /opt/app_elevenlabs_convai/venv
# python_venv's default, compiled into the module: the venv "make install" creates. Empty
# means the system Python, whose dist-packages hold pyconvai (make deb builds it so).
PYTHON_VENV ?= $(VENVDIR)

TESTBED_ROOT ?= /var/cache/app_elevenlabs_convai/sid-root
DEV_VENV ?= .venv
DEV_PYTHON = $(DEV_VENV)/bin/python

MODULE = app_elevenlabs_convai
BUILD = build
SOURCES = csrc/app_elevenlabs_convai.c csrc/convai_actions.c csrc/convai_capture.c csrc/convai_config.c csrc/convai_cli.c \
	csrc/convai_manager.c csrc/embed.c csrc/ring.c
# Documentation too long to sit in its source (as chan_websocket keeps chan_websocket_doc.xml).
DOC_SOURCES = csrc/convai_config_doc.xml
HEADERS = csrc/convai.h csrc/convai_wire.h csrc/embed.h csrc/ring.h

.PHONY: all module doc wheel install install-module install-venv install-config \
	deb dev test asan-test bench fuzz demo clean

ifeq ($(ASTINCDIR),)
# No Asterisk here: build (and install) inside the test bed, then copy the results back.
all:
	tests/testbed/prepare.sh "$(TESTBED_ROOT)"
	mkdir -p $(BUILD)
	cp "$(TESTBED_ROOT)/usr/src/$(MODULE)/$(BUILD)/$(MODULE).so" \
		"$(TESTBED_ROOT)/usr/src/$(MODULE)/$(BUILD)/$(MODULE)-en_US.xml" $(BUILD)/
else
all: module doc wheel
endif

module: $(BUILD)/$(MODULE).so

doc: $(BUILD)/$(MODULE)-en_US.xml

LIBPYTHON = $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("INSTSONAME"))')
CFLAGS ?= -O2 -g
CFLAGS += -fmacro-prefix-map=csrc/=
MODULE_CFLAGS = -std=gnu11 -fPIC -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers \
	-I$(ASTINCDIR) -DAST_MODULE=\"$(MODULE)\" -DAST_MODULE_SELF_SYM=__internal_$(MODULE)_self \
	-DCONVAI_LIBPYTHON=\"$(LIBPYTHON)\" -DCONVAI_DEFAULT_VENV=\"$(PYTHON_VENV)\" \
	-DCONVAI_PYTHON_PREFIX=\"$(shell $(PYTHON_CONFIG) --prefix)\"

$(BUILD)/%.o: csrc/%.c $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) $(MODULE_CFLAGS) -c -o $@ $<

# embed.c is the only file that sees Python.h.
$(BUILD)/embed.o: csrc/embed.c $(HEADERS) | $(BUILD)
	$(CC) $(CFLAGS) $(MODULE_CFLAGS) $(shell $(PYTHON_CONFIG) --includes) -c -o $@ $<

$(BUILD)/$(MODULE).so: $(SOURCES:csrc/%.c=$(BUILD)/%.o)
	$(CC) -shared $(LDFLAGS) -o $@ $^ $(shell $(PYTHON_CONFIG) --ldflags --embed) -ldl

# Asterisk reads third-party docs from documentation/thirdparty/*-en_US.xml: the
# DOCUMENTATION blocks of every source, then DOC_SOURCES (elevenlabs.conf's).
$(BUILD)/$(MODULE)-en_US.xml: $(SOURCES) $(DOC_SOURCES) | $(BUILD)
	{ echo '<?xml version="1.0" encoding="UTF-8"?>'; \
	  echo '<!DOCTYPE docs SYSTEM "appdocsxml.dtd">'; \
	  echo '<docs xmlns:xi="http://www.w3.org/2001/XInclude">'; \
	  for source in $(SOURCES); do \
	    sed -n '/^\/\*\*\* DOCUMENTATION/,/^ \*\*\*\//p' $$source | sed '/^\/\*\*\* DOCUMENTATION/d;/^ \*\*\*\//d'; \
	  done; \
	  cat $(DOC_SOURCES); \
	  echo '</docs>'; } > $@

# pyconvai as a wheel, with its cffi ring binding compiled for $(PYTHON).
wheel: | $(BUILD)
	rm -f $(BUILD)/pyconvai-*.whl
	test -x $(BUILD)/wheel-venv/bin/pip || $(PYTHON) -m venv $(BUILD)/wheel-venv
	$(BUILD)/wheel-venv/bin/pip install -q --disable-pip-version-check setuptools wheel cffi
	$(BUILD)/wheel-venv/bin/pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w $(BUILD) .

$(BUILD):
	mkdir -p $@

install: install-module install-venv install-config

install-module: module doc
	install -d $(DESTDIR)$(ASTMODDIR) $(DESTDIR)$(ASTDATADIR)/documentation/thirdparty
	install -m 0755 $(BUILD)/$(MODULE).so $(DESTDIR)$(ASTMODDIR)/
	install -m 0644 $(BUILD)/$(MODULE)-en_US.xml $(DESTDIR)$(ASTDATADIR)/documentation/thirdparty/

# The venv python_venv in elevenlabs.conf names (default $(VENVDIR)).
install-venv: wheel
	test -x $(DESTDIR)$(VENVDIR)/bin/python3 || $(PYTHON) -m venv $(DESTDIR)$(VENVDIR)
	$(DESTDIR)$(VENVDIR)/bin/pip install -q --disable-pip-version-check --force-reinstall --no-deps $(BUILD)/pyconvai-*.whl
	$(DESTDIR)$(VENVDIR)/bin/pip install -q --disable-pip-version-check $(BUILD)/pyconvai-*.whl

# Never overwrite an administrator's elevenlabs.conf.
install-config:
	install -d $(DESTDIR)$(ASTETCDIR)
	test -e $(DESTDIR)$(ASTETCDIR)/elevenlabs.conf || \
		install -m 0640 elevenlabs.conf.example $(DESTDIR)$(ASTETCDIR)/elevenlabs.conf

# The Debian package, built by debhelper in a copy of this tree (its clean must not touch
# build/ or the editable pyconvai here). Needs debian/control's Build-Depends: apt-get build-dep ./
deb:
	rm -rf $(BUILD)/deb
	mkdir -p $(BUILD)/deb/src
	tar --exclude=./.git --exclude=./.venv --exclude=./$(BUILD) --exclude=./out --exclude='__pycache__' \
		--exclude='./pyconvai/_ring*' --exclude='*.egg-info' --exclude=./.pytest_cache --exclude=./.hypothesis \
		-cf - . | tar -C $(BUILD)/deb/src -xf -
	cd $(BUILD)/deb/src && dpkg-buildpackage -us -uc -b
	ls $(BUILD)/deb/*.deb

# Developer environment on this machine: pyconvai editable, with test tools.
dev: $(DEV_VENV)/.installed

$(DEV_VENV)/.installed: pyproject.toml setup.py csrc/ring.c csrc/ring.h csrc/clockstats.c csrc/clockstats.h csrc/ring_build.py
	test -x $(DEV_PYTHON) || $(PYTHON) -m venv $(DEV_VENV)
	$(DEV_PYTHON) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

# The test bed (system Asterisk, or the sid root) is prepared by the same script CI runs.
test: dev
	root="$$(tests/testbed/prepare.sh "$(TESTBED_ROOT)")" || exit 1; \
		CONVAI_TESTBED_ROOT="$$root" $(DEV_PYTHON) -m pytest -ra tests

# The module built with -fsanitize=address, Asterisk started with libasan preloaded; any
# AddressSanitizer report fails the test that produced it. The next "make test" puts the
# normal build back.
asan-test: dev
	root="$$(CONVAI_ASAN=1 tests/testbed/prepare.sh "$(TESTBED_ROOT)")" || exit 1; \
		CONVAI_ASAN=1 CONVAI_TESTBED_ROOT="$$root" $(DEV_PYTHON) -m pytest -ra \
		tests/e2e/test_call.py tests/e2e/test_faults.py tests/e2e/test_module.py tests/e2e/test_providers.py

# The fuzzers of tests/unit/test_fuzz.py with 20,000 examples per property (make test: 300).
fuzz: dev
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-20000} $(DEV_PYTHON) -m pytest -q tests/unit/test_fuzz.py

bench: dev
	$(DEV_PYTHON) -m pip install -q --disable-pip-version-check -e '.[test,bench]'
	root="$$(tests/testbed/prepare.sh "$(TESTBED_ROOT)")" || exit 1; \
		CONVAI_TESTBED_ROOT="$$root" $(DEV_PYTHON) -m tests.bench

# One call through the real Asterisk: the bundled agent simulator speaking with espeak-ng
# (installed here when missing) and a synthetic caller; the conversation is printed as it
# happens. With ELEVENLABS_AGENT_ID (and ELEVENLABS_API_KEY) set, your real agent instead.
# DEMO_ARGS: --out FILE (the recording, default out/demo-call.wav), --timeout S, --simulator,
# --transfer (the agent puts the caller through to a local extension).
demo: dev
	@if ! command -v espeak-ng >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "make demo: installing espeak-ng (the voices of the simulated agent and caller) with apt-get"; \
			export DEBIAN_FRONTEND=noninteractive; \
			apt-get install -y -qq espeak-ng >/dev/null 2>&1 || \
				{ echo "make demo: apt-get update, then installing espeak-ng again"; \
				  apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null; } || \
				echo "make demo: could not install espeak-ng; the demo speaks tones instead"; \
		else \
			echo "make demo: espeak-ng is missing and cannot be installed here (needs root and apt-get); the demo speaks tones instead"; \
		fi; \
	fi
	@echo "make demo: preparing Asterisk with the module (tests/testbed/prepare.sh)"
	@root="$$(tests/testbed/prepare.sh "$(TESTBED_ROOT)")" || exit 1; \
		CONVAI_TESTBED_ROOT="$$root" $(DEV_PYTHON) -m tests.demo $(DEMO_ARGS)

clean:
	rm -rf $(BUILD) pyconvai/_ring.c pyconvai/_ring*.so pyconvai/_ring*.o *.egg-info
