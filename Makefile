# One entry point for humans and CI (.ci/run calls `make test`).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DSV4_CACHE ?= $(HOME)/.cache/dsv4
export DSV4_FIXTURES ?= $(abspath ../shared/fixtures)

.PHONY: venv plan lint generate test test-fast cluster

# torch==2.13.0 resolves to the CPU wheel that this machine kind keeps in /opt/wheels.
$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[operator,runtime,kernels,test,lint]" torch==2.13.0
	touch $@

venv: $(BIN)/.installed

plan: venv
	$(BIN)/dsv4 plan examples/pro-1m-h100.yaml

generate: venv
	$(BIN)/python -m dsv4_operator.crdgen

lint: venv
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Builds (once, cached under $(DSV4_CACHE)) kube-apiserver, etcd, kube-controller-manager,
# kubectl and helm for the e2e tests.
cluster:
	bash hack/cluster.sh build

test-fast: venv
	$(BIN)/pytest -m "not e2e and not slow"

test: lint cluster
	PATH="$(DSV4_CACHE)/bin:$$PATH" $(BIN)/pytest
