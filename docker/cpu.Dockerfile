# mixtune step image (CPU): every step's code and pinned dependencies, for the data, evaluation,
# register and inference steps and the trigger (`mixtune submit`). KFP runs
# `python -m kfp.dsl.executor_main` in it for each lightweight component.
#
# Build from the repo root (BuildKit):
#   DOCKER_BUILDKIT=1 docker build -f docker/cpu.Dockerfile -t mixtune/cpu:0.1.0 .
# Behind a TLS-intercepting proxy, hand pip a full CA bundle as a build secret (never a layer):
#   ... --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt
ARG BASE_IMAGE=python:3.11-slim
# The Makefile's pin; installed first and alone, then held by a constraint.
ARG TORCH_VERSION=2.13.0

# -- build: the pinned dependencies in /opt/venv, the project as a wheel ------------------------
FROM ${BASE_IMAGE} AS build
ARG PIP_VERSION=26.3
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# `python3`: the official image's /usr/local/bin/python3 and Debian's /usr/bin/python3 alike.
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Every pip call below sources this: the secret `ca` (a full bundle) replaces pip's own when given.
RUN printf '%s\n' 'if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi' > /opt/pip-ca.sh
RUN --mount=type=secret,id=ca,target=/run/secrets/ca \
    . /opt/pip-ca.sh && pip install "pip==${PIP_VERSION}"
# torch FIRST and alone, from a PEP 503 index of CPU-only builds (it serves torch's dependencies too).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION
RUN --mount=type=secret,id=ca,target=/run/secrets/ca \
    . /opt/pip-ca.sh \
    && pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && pip list --format=freeze | grep -i '^torch==' > /opt/torch-constraint.txt
WORKDIR /src
COPY requirements.txt ./
# The constraint makes pip fail rather than replace the torch build installed above.
RUN --mount=type=secret,id=ca,target=/run/secrets/ca \
    . /opt/pip-ca.sh && pip install --constraint /opt/torch-constraint.txt -r requirements.txt
# The project as a wheel, installed in the final stage: a code change leaves the venv layer as it is.
COPY pyproject.toml README.md ./
COPY components ./components
COPY pipelines ./pipelines
RUN --mount=type=secret,id=ca,target=/run/secrets/ca \
    . /opt/pip-ca.sh && pip wheel --no-deps --wheel-dir /wheels .

# -- final: the venv on a clean base, the project, uid 1000 ---------------------------------------
FROM ${BASE_IMAGE}
ARG TORCH_VERSION
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN useradd --create-home --uid 1000 --user-group --shell /bin/bash mixtune
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONUNBUFFERED=1
# Checks: nothing conflicts, torch is still the CPU build, the CLI starts.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-deps --no-index /wheels/mixtune-*.whl \
    && pip check \
    && python -c "import sys, torch; v, cuda = torch.__version__, torch.version.cuda; \
sys.exit(0 if v.split('+')[0] == '${TORCH_VERSION}' and cuda is None else f'torch was replaced: {v} (CUDA {cuda})')" \
    && mixtune --help > /dev/null
# Set after the checks above, which run as root: caches are created by uid 1000, in its home.
ENV PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/home/mixtune/.cache/huggingface \
    MPLCONFIGDIR=/home/mixtune/.cache/matplotlib
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
WORKDIR /home/mixtune
CMD ["mixtune", "--help"]
