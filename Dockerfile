# syntax=docker/dockerfile:1
# exitserve serving image: `exitserve serve` on the v2 API (8000) and /metrics (8002).
#
#   docker build -t exitserve:gpu .                          # CUDA 13 + cuDNN 9 (default)
#   docker build -t exitserve:cpu --build-arg VARIANT=cpu .  # python slim, no CUDA
#   docker run --gpus all -p 8000:8000 -p 8002:8002 --stop-timeout 30 exitserve:gpu
#   docker run ... -v /path/to/repository:/models:ro exitserve:gpu  # your own models
#
# The CUDA base matches the pinned onnxruntime-gpu (deploy/requirements-serve.txt): 1.31.1
# is built against CUDA 13.0 and cuDNN 9 (onnxruntime/capi/build_and_package_info.py says
# cuda_version 13.0; libonnxruntime_providers_cuda.so needs libcudart.so.13,
# libcublas.so.13 and dlopens libcudnn.so.9). CUDA minor-version compatibility lets any
# 13.x runtime serve it; the node driver must support CUDA 13 (>= 580). Bump this tag and
# the pin together: tests/deploy/test_dockerfile.py checks the majors agree.
# Both variants run Python 3.12 (Ubuntu 24.04's python3; python:3.12-slim), so one
# pinned dependency set serves both.
ARG VARIANT=gpu
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${CUDA_IMAGE} AS base-gpu
# python3-venv only builds the venv in the builder; the runtime reuses this stage as is.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
# auto: the CUDA provider where a GPU is visible, else the CPU (e.g. run without --gpus).
# The CUDA JIT cache goes to /tmp, the one writable place under readOnlyRootFilesystem.
ENV EXITSERVE_DEVICE=auto \
    CUDA_CACHE_PATH=/tmp/cuda-cache

FROM ${PYTHON_IMAGE} AS base-cpu
ENV EXITSERVE_DEVICE=cpu

# ---- builder: a self-contained venv at /opt/venv, built on the runtime's own Python ----
# (DL3006: base-* are the stages above, pinned there.)
# hadolint ignore=DL3006
FROM base-${VARIANT} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/venv
# The complete, pinned serving set (no torch), alone first so code edits keep this layer.
COPY deploy/requirements-serve.txt /tmp/requirements-serve.txt
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps -r /tmp/requirements-serve.txt
# The package itself (service, models incl. the bundled repository); .dockerignore lets in
# only what the wheel needs.
COPY . /src
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps /src \
    && /opt/venv/bin/pip check

# ---- runtime ----
# hadolint ignore=DL3006
FROM base-${VARIANT} AS runtime
ARG VARIANT
LABEL org.opencontainers.image.title="exitserve" \
      org.opencontainers.image.description="Inference server for multi-exit neural networks (${VARIANT})" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 exitserve \
    && useradd --system --uid 10001 --gid exitserve --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin exitserve
COPY --from=builder /opt/venv /opt/venv
# The bundled repository, root-owned and read-only to the server. Mount a volume over
# /models (or point EXITSERVE_MODEL_REPOSITORY / --model-repository elsewhere) to serve
# your own.
COPY models/repository /models
# glibc: buffers of 1 MiB and more (request bodies, parsed JSON) go back to the kernel when
# freed, and two arenas instead of eight per core, so RSS falls back after bursts of large
# requests instead of staying at its peak (docs/reliability.md, "Request bodies and memory").
ENV GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1048576:glibc.malloc.arena_max=2 \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EXITSERVE_HOST=0.0.0.0 \
    EXITSERVE_MODEL_REPOSITORY=/models
USER 10001:10001
EXPOSE 8000 8002
# Docker's own health state; Kubernetes uses its probes (deploy/k8s) instead.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/v2/health/ready' % os.environ.get('EXITSERVE_HTTP_PORT', '8000'), timeout=4)"]
# Flags after the image name go to `exitserve serve` (e.g. --log-level debug). SIGTERM
# drains queued requests for up to EXITSERVE_DRAIN_TIMEOUT_S (20 s): give `docker stop`
# longer than that (--stop-timeout 30).
ENTRYPOINT ["exitserve", "serve"]
