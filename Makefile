# kernel-lab: `make setup` once (idempotent), then `make test`. See README.md.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
KLAB := $(VENV)/bin/klab
PYTEST := $(VENV)/bin/pytest
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian 12 packages: build tools, cross compiler, pahole for BTF, QEMU, image builder,
# and headless Chromium, which renders report.html in tests/integration/test_report_browser.py.
APT_PACKAGES := build-essential bc bison flex libelf-dev libssl-dev dwarves ccache cpio kmod rsync xz-utils lz4 \
	gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu \
	qemu-system-x86 qemu-system-arm qemu-utils \
	mmdebstrap qemu-user-static debian-archive-keyring e2fsprogs arch-test gdb-multiarch \
	python3 python3-venv python3-pip git util-linux iproute2 ca-certificates \
	chromium

KERNEL_SRC ?=
ARCHES ?= x86_64 arm64
SUITES ?=
JOBS ?= 1

.PHONY: setup setup-apt setup-python setup-lava lint test test-fast test-integration test-kernel bisect bench clean

# CI also installs LAVA's dispatcher, so the LAVA tests run there (they skip without it);
# WITH_LAVA= turns that off (CI cell jobs, which run no LAVA test).
WITH_LAVA ?= $(CI)
setup: setup-apt setup-python $(if $(WITH_LAVA),setup-lava) ## install everything (idempotent)

setup-apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "Debian packages: all present"; fi

setup-python:
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]'
	@echo "python: $$($(PY) --version), klab at $(KLAB)"

# LAVA's dispatcher pulls ~150 packages: only where the LAVA tests run (CI calls it).
setup-lava:
	@dpkg-query -W -f='$${Status}' lava-dispatcher 2>/dev/null | grep -q 'install ok installed' || { \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends lava-dispatcher; }

lint:
	$(VENV)/bin/ruff check lab tests suites bench
	$(VENV)/bin/ruff format --check lab tests suites bench
	$(VENV)/bin/mypy lab
	$(VENV)/bin/check-jsonschema -q --builtin-schema vendor.github-workflows ci/github-actions.yml
	$(VENV)/bin/check-jsonschema -q --builtin-schema vendor.gitlab-ci ci/gitlab-ci.yml

# Unit tests only: no kernel builds, no boots (under 10 s).
test-fast:
	$(PYTEST) -q -n 2 tests/unit

# The whole suite: lint, unit tests, suites on this host, real builds and boots.
test: lint
	$(PYTEST) -q -m "not kernel and not host and not lava" -n 2 tests
	$(PYTEST) -q -m "host" tests
	$(PYTEST) -q -m "kernel or lava" -n 2 --dist loadscope --durations=15 tests

# The main job: build each arch, build or reuse images, boot, run all suites, summary table.
test-kernel:
	$(KLAB) test-kernel $(if $(KERNEL_SRC),--src $(KERNEL_SRC)) --arches "$(ARCHES)" \
		$(foreach s,$(SUITES),--suite $(s)) -n $(JOBS)

bisect:
	@[ -n "$(KERNEL_SRC)" ] && [ -n "$(GOOD)" ] && [ -n "$(BAD)" ] && [ -n "$(TEST)" ] || \
	  { echo "usage: make bisect KERNEL_SRC=GIT_TREE GOOD=REV BAD=REV TEST=SUITE.TEST [ARCH=x86_64] [RETRIES=N]"; exit 2; }
	$(KLAB) bisect --src $(KERNEL_SRC) --good $(GOOD) --bad $(BAD) --arch $(or $(ARCH),x86_64) --test $(TEST) \
		$(if $(RETRIES),--retries $(RETRIES))

bench:
	$(PY) bench/build.py
	$(PY) bench/boot.py
	$(PY) bench/matrix.py
	$(PY) bench/bisection.py
	$(PY) bench/loop.py make-test
	$(PY) bench/loop.py dev

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
