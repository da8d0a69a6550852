# syntax=docker/dockerfile:1
# Image of every Koverage service: `python -m services.<name>` and the
# `koverage` CLI (`koverage migrate`). Multi-stage: the build stage compiles
# wheels and the worker's C decoder (setup.py) with a toolchain; the runtime
# stage holds only the virtualenv and the shared libraries WeasyPrint needs,
# and runs as an unprivileged user.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/koverage
ENV PATH=/opt/koverage/bin:$PATH
WORKDIR /src
# Dependencies first, so a code change does not rebuild them.
COPY pyproject.toml setup.py README.md ./
COPY koverage ./koverage
COPY services ./services
RUN pip install --upgrade pip setuptools \
    && pip install .

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
# WeasyPrint (Underwriter's PDF report) needs pango and harfbuzz at run time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz0b libharfbuzz-subset0 \
        fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 koverage \
    && useradd --system --uid 10001 --gid koverage --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin koverage
COPY --from=build /opt/koverage /opt/koverage
ENV PATH=/opt/koverage/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/cache \
    KOVERAGE_HOST=0.0.0.0
WORKDIR /app
# Numeric user so Kubernetes can verify runAsNonRoot without /etc/passwd.
USER 10001:10001
EXPOSE 50051 9090
CMD ["koverage", "--help"]
