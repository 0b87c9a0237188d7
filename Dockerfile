# syntax=docker/dockerfile:1
#
# vhost-operator images, two targets from one file:
#
#   docker build -t vhost-operator:0.1.0 .                      the operator (default target;
#                                                               also the tenancy gate)
#   docker build --target agent -t vhost-operator:0.1.0-agent .  + Debian's nginx: the nginx agent
#                                                               sidecar, and by default the nginx
#                                                               container next to it (the chart)
#
# Both run as a fixed non-root UID (10001, the chart's runAsUser) with nothing writable but what
# the pod mounts. The base is pinned to an exact Python release on Debian 12; pin it by digest in
# your registry mirror for bit-for-bit rebuilds (PYTHON_IMAGE=python:...@sha256:...).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# -- build: the package's wheel and the wheels of its dependencies ------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
# Our wheel first (package data included: nginx templates, py.typed), then every dependency as
# a wheel, so the runtime stage installs offline from exactly what was resolved here.
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && pip wheel --wheel-dir /wheels /wheels/vhost_operator-*.whl

# -- runtime: a virtual environment with the wheels, no pip, no compilers ------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/vhost-operator/bin:$PATH
# The wheels are bind-mounted from the build stage: they never become a layer of the image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv --without-pip /opt/vhost-operator \
    && pip --python /opt/vhost-operator/bin/python install --no-index --find-links /wheels \
        /wheels/vhost_operator-*.whl \
    && groupadd --system --gid 10001 vhost-operator \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --home-dir /nonexistent \
        --shell /usr/sbin/nologin vhost-operator
WORKDIR /tmp

# -- agent: the runtime plus Debian's nginx, for the agent's `nginx -t` -----------------------------
FROM runtime AS agent
# Debian 12's nginx 1.22.1 (with Debian's security fixes): the version the operator's templates
# are checked with (`listen ... ssl http2` syntax). It runs unprivileged: the chart points its
# pid file, temp paths and logs at mounted volumes and lets it bind 80/443 through a sysctl.
RUN apt-get update \
    && apt-get install -y --no-install-recommends nginx=1.22.1-* \
    && rm -rf /var/lib/apt/lists/*
USER 10001:10001
ENTRYPOINT ["vhost-operator"]
CMD ["nginx-agent"]

# -- operator (default target) ------------------------------------------------------------------
FROM runtime AS operator
USER 10001:10001
ENTRYPOINT ["vhost-operator"]
CMD ["run"]
