# Two entry points: `make demo` and `make test`. Each installs what it needs first, idempotently:
# Debian packages where missing, a .venv, and the package with its extras.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Build and run-time needs of the Python dependencies (systemd-python compiles against
# libsystemd) and of the test suite: Debian's Chromium drives the browser tests through
# Playwright (never a downloaded browser), coturn relays the TURN test, ffmpeg checks video;
# debootstrap builds the rootfs that tests/systemd boots with systemd as PID 1, whose units the
# host's systemd-analyze verifies; iproute2's ip joins the network-fault test's namespaces.
DEB_PACKAGES := gcc pkg-config libsystemd-dev python3-dev python3-venv chromium coturn ffmpeg fonts-dejavu-core \
	debootstrap systemd iproute2

.PHONY: demo test deps debs lint typecheck unit bench clean image-check

deps: $(STAMP)

debs:
	@bash .ci/install-debs $(DEB_PACKAGES)

$(STAMP): pyproject.toml .ci/install-debs
	@bash .ci/install-debs $(DEB_PACKAGES)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

demo: deps
	$(BIN)/appliance demo

lint: deps
	$(BIN)/ruff check appliance tests hw-tests
	$(BIN)/ruff format --check appliance tests hw-tests

typecheck: deps
	$(BIN)/mypy

unit: deps debs
	$(BIN)/pytest

test: lint typecheck unit

# The image's install steps on an arm64 rootfs under qemu (15-25 minutes): not part of `test`.
image-check:
	bash image-build/check

bench: deps
	$(BIN)/appliance bench bus --json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
