# mixtune training image (CUDA): PyTorch's CUDA build and DeepSpeed with its ops PREBUILT, for the
# TrainJob / PyTorchJob pods, which run `torchrun -m components.train.worker --job-uri ...`.
#
# Build from the repo root with BuildKit on x86_64; no GPU is needed (nvcc compiles for the
# architectures in TORCH_CUDA_ARCH_LIST):
#   DOCKER_BUILDKIT=1 docker build -f docker/cuda.Dockerfile -t mixtune/train-cuda:0.1.0 .
# Behind a TLS-intercepting proxy add `--secret id=ca,src=/etc/ssl/certs/ca-certificates.crt`.
#
# CUDA_VERSION must be the CUDA release of the torch index below (cu128 = 12.8): DeepSpeed refuses to
# compile its ops when nvcc and torch.version.cuda differ (beyond the minor versions it whitelists).
ARG CUDA_VERSION=12.8.1
ARG UBUNTU=ubuntu24.04
ARG UV_VERSION=0.13.9
# The Makefile's pin; installed first and alone, then held by a constraint.
ARG TORCH_VERSION=2.13.0

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# -- build: Python, torch, DeepSpeed ops (nvcc + g++), the project -----------------------------
FROM nvidia/cuda:${CUDA_VERSION}-devel-${UBUNTU} AS build
ARG PYTHON_VERSION=3.11.18
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_VERSION
ARG DEEPSPEED_VERSION=0.19.8
ARG PIP_VERSION=26.3
ARG SETUPTOOLS_VERSION=84.2.1
ARG NINJA_VERSION=1.13.2
# GPU architectures the ops are compiled for: 8.0 = A100 (also runs on 8.6/8.9: A10, L4, RTX 30/40),
# 9.0 = H100/H200; +PTX lets newer GPUs (Blackwell) JIT the 9.0 code.
ARG TORCH_CUDA_ARCH_LIST="8.0 9.0+PTX"
ARG MAX_JOBS=4
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# g++ is nvcc's host compiler and builds the C++ ops (CPU Adam).
# No apt version pins (DL3008): Ubuntu drops a superseded version from its archive, so an exact pin
# breaks every rebuild after a security update; the base image tag already fixes the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*
# Python 3.11: Ubuntu 24.04 ships 3.12 (22.04: 3.10) and the deadsnakes PPA only serves current
# Ubuntu series with unpinnable versions. uv's python-build-standalone CPython is a relocatable,
# self-contained build pinned to a patch release (by PYTHON_VERSION and UV_VERSION); it lives in
# /opt/python, copied unchanged to the final stage next to the venv that points at it.
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python UV_PYTHON_PREFERENCE=only-managed
RUN --mount=type=secret,id=ca,target=/run/secrets/ca \
    if [ -s /run/secrets/ca ]; then export UV_SYSTEM_CERTS=1 SSL_CERT_FILE=/run/secrets/ca; fi \
    && uv python install --no-bin "${PYTHON_VERSION}" \
    && "$(uv python find "${PYTHON_VERSION}")" -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# Every pip call below sources this: the secret `ca` (a full bundle) replaces pip's own when given.
RUN printf '%s\n' 'if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi' > /opt/pip-ca.sh
RUN --mount=type=secret,id=ca,target=/run/secrets/ca \
    . /opt/pip-ca.sh \
    && pip install "pip==${PIP_VERSION}" "setuptools==${SETUPTOOLS_VERSION}" "ninja==${NINJA_VERSION}"
# torch FIRST and alone, from the CUDA index.
RUN --mount=type=secret,id=ca,target=/run/secrets/ca \
    . /opt/pip-ca.sh \
    && pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && python -c "import sys, torch; v, cuda = torch.__version__, torch.version.cuda; \
sys.exit(0 if v.split('+')[0] == '${TORCH_VERSION}' and cuda else f'not a CUDA build of torch ${TORCH_VERSION}: {v}')"
# DeepSpeed from source with its ops compiled now, not JIT-compiled in every pod at start-up:
# FUSED_ADAM (the GPU optimizer a DeepSpeed config's "optimizer" section builds) and CPU_ADAM
# (ZeRO-Offload; DeepSpeed compiles it with -march=native, so build on a CPU generation no newer
# than the training nodes'). `deepspeed.init_distributed` compiles nothing on CUDA (its shared-memory
# allreduce op exists only for the CPU accelerator, which the worker keeps from building).
# DS_ACCELERATOR=cuda: there is no GPU at build time, and DeepSpeed would otherwise pick its CPU
# accelerator and build CPU ops. DeepSpeed silently skips an op it cannot build, hence the checks.
RUN --mount=type=secret,id=ca,target=/run/secrets/ca \
    . /opt/pip-ca.sh \
    && pip list --format=freeze | grep -i '^torch==' > /opt/constraints.txt \
    && CUDA_HOME=/usr/local/cuda DS_ACCELERATOR=cuda DS_BUILD_OPS=0 DS_BUILD_FUSED_ADAM=1 DS_BUILD_CPU_ADAM=1 \
       DS_ENABLE_NINJA=1 MAX_JOBS="${MAX_JOBS}" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST}" \
       pip install --no-build-isolation --constraint /opt/constraints.txt "deepspeed==${DEEPSPEED_VERSION}" \
    && python -c "import sys, deepspeed.git_version_info as g; \
missing = [op for op in ('fused_adam', 'cpu_adam') if not g.installed_ops.get(op)]; \
sys.exit(f'DeepSpeed ops not prebuilt: {missing}' if missing else 0)" \
    && ldd /opt/venv/lib/python3.11/site-packages/deepspeed/ops/adam/fused_adam_op*.so | grep libcudart > /dev/null \
    && pip list --format=freeze | grep -i '^deepspeed==' >> /opt/constraints.txt
WORKDIR /src
COPY requirements.txt ./
RUN --mount=type=secret,id=ca,target=/run/secrets/ca \
    . /opt/pip-ca.sh && pip install --constraint /opt/constraints.txt -r requirements.txt
# The project as a wheel, installed in the final stage: a code change leaves the venv layer as it is.
COPY pyproject.toml README.md ./
COPY components ./components
COPY pipelines ./pipelines
RUN --mount=type=secret,id=ca,target=/run/secrets/ca \
    . /opt/pip-ca.sh && pip wheel --no-deps --wheel-dir /wheels .

# -- final: CUDA runtime libraries, Python, the venv; uid 1000 ---------------------------------
FROM nvidia/cuda:${CUDA_VERSION}-runtime-${UBUNTU}
ARG TORCH_VERSION
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# libgomp1: the prebuilt CPU Adam op is compiled with -fopenmp. Unpinned: see the build stage.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && if id -u ubuntu > /dev/null 2>&1; then userdel --remove ubuntu; fi \
    && useradd --create-home --uid 1000 --user-group --shell /bin/bash mixtune
COPY --from=build /opt/python /opt/python
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONUNBUFFERED=1
# Checks: nothing conflicts, torch is still the CUDA build, the prebuilt ops load here (this stage
# has no compiler), the launcher and the CLI start.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-deps --no-index /wheels/mixtune-*.whl \
    && pip check \
    && python -c "import importlib, sys, torch; v = torch.__version__; \
[importlib.import_module(f'deepspeed.ops.adam.{m}') for m in ('fused_adam_op', 'cpu_adam_op')]; \
sys.exit(0 if v.split('+')[0] == '${TORCH_VERSION}' and torch.version.cuda else f'torch was replaced: {v}')" \
    && torchrun --help > /dev/null \
    && mixtune --help > /dev/null
# Set after the checks above, which run as root: caches are created by uid 1000, in its home.
ENV PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/home/mixtune/.cache/huggingface \
    MPLCONFIGDIR=/home/mixtune/.cache/matplotlib \
    TORCH_EXTENSIONS_DIR=/home/mixtune/.cache/torch_extensions
USER 1000:1000
WORKDIR /home/mixtune
CMD ["torchrun", "--help"]
