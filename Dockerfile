# syntax=docker/dockerfile:1
#
# bert-forge images (docs/DEPLOYMENT.md has the full story).
#   serve (default)  the HTTP service: FastAPI + onnxruntime-gpu, CUDA 13/cuDNN 9, no torch
#                      docker build -t bert-forge:serve .
#   train            python -m training ... (torch 2.13.0)
#                      docker build --target train -t bert-forge:train .
# Bake model bundles into the serve image instead of mounting them at /models:
#   docker build --build-context models=path/to/bundles -t bert-forge:serve-baked .

ARG PYTHON_VERSION=3.11

# ---------------------------------------------------------------------------------------------
# base: interpreter, one virtualenv on PATH, and the unprivileged user every target runs as.
FROM python:${PYTHON_VERSION}-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# A fixed uid/gid, used numerically in USER: Kubernetes' runAsNonRoot can verify only a numeric
# user, and volume permissions can rely on it.
RUN python -m venv /opt/venv \
    && groupadd --system --gid 10001 bert \
    && useradd --system --uid 10001 --gid bert --create-home --home-dir /home/bert \
       --shell /usr/sbin/nologin bert

# ---------------------------------------------------------------------------------------------
# models: empty unless replaced by a named build context (--build-context models=DIR), which
# bakes DIR's bundles into /models of the serve image. Without it /models stays an empty mount
# point for a volume.
FROM scratch AS models

# ---------------------------------------------------------------------------------------------
# train: the offline pipeline. PyPI's torch wheel for linux/x86_64 is the CUDA build (it pulls
# its own nvidia-* wheels). For a smaller CPU-only image:
#   --build-arg TORCH_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
# (or a .../whl/cuXYZ index for another CUDA build). An extra index, not a replacement: the
# other pins in constraints.txt still come from PyPI, and pip prefers the labelled build
# 2.13.0+cpu to PyPI's 2.13.0.
FROM base AS train
ARG TORCH_EXTRA_INDEX_URL=""
WORKDIR /build
COPY constraints.txt ./
# torch first and alone, as in the Makefile, so the extra index serves torch and nothing else.
RUN pip install ${TORCH_EXTRA_INDEX_URL:+--extra-index-url "$TORCH_EXTRA_INDEX_URL"} \
        -c constraints.txt torch==2.13.0
COPY pyproject.toml README.md ./
COPY app/ app/
COPY bundle/ bundle/
COPY training/ training/
# serve rides along: export runs onnxruntime parity checks (the torch-free bundle/ package is
# shared by both sides).
RUN pip install -c constraints.txt '.[train,serve]' \
    && rm -rf /build \
    && install -d -o bert -g bert /work
WORKDIR /work
USER 10001:10001
ENTRYPOINT ["python", "-m", "training"]
CMD ["--help"]

# ---------------------------------------------------------------------------------------------
# serve: the default target (last stage). One process per container: the batcher is one queue.
FROM base AS serve
ARG PYTHON_VERSION
WORKDIR /build
COPY constraints.txt ./
COPY requirements/ requirements/
# CUDA/cuDNN wheels in their own layer: ~2 GB that changes only with the pins, not with app code.
RUN pip install -c constraints.txt -r requirements/cuda-runtime.txt
COPY pyproject.toml README.md ./
COPY app/ app/
COPY bundle/ bundle/
# The same command CI runs in a fresh virtualenv (tests/test_deploy.py); the check makes a
# dependency that drags torch in fail the build instead of adding gigabytes.
RUN pip install -c constraints.txt '.[serve]' \
    && python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
    && rm -rf /build
# onnxruntime's CUDA provider finds the wheels' libraries through the loader path, whether or not
# the app calls onnxruntime.preload_dlls(). The driver itself is injected by the NVIDIA container
# toolkit, which reads NVIDIA_DRIVER_CAPABILITIES (NVIDIA_VISIBLE_DEVICES is left to the runtime:
# setting it here would expose every GPU to containers that asked for none).
ARG NVIDIA_LIBS=/opt/venv/lib/python${PYTHON_VERSION}/site-packages/nvidia
ENV LD_LIBRARY_PATH=${NVIDIA_LIBS}/cu13/lib:${NVIDIA_LIBS}/cudnn/lib \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    BERT_HOST=0.0.0.0 \
    BERT_PORT=8000 \
    BERT_MODELS_DIR=/models
COPY --from=models / /models/
WORKDIR /home/bert
USER 10001:10001
EXPOSE 8000
# Liveness only: /healthz answers once the server listens (models load in the background);
# /readyz, 503 while loading or draining, is for routing. urllib raises on a non-2xx answer, so
# no curl is needed.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", \
         "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/healthz' % os.environ['BERT_PORT'], timeout=4)"]
ENTRYPOINT ["python", "-m", "app"]
