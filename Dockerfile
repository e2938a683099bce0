# syntax=docker/dockerfile:1
# One image for every Mercato process. With no arguments it serves the gateway; any other
# `mercato` command runs instead:
#
#   docker build -t mercato .
#   docker run -p 8000:8000 mercato                      # mercato serve gateway
#   docker run mercato serve products --workers 2        # one service (its port: PRODUCTS_PORT)
#   docker run mercato worker                            # the notification worker (8005)
#   docker run mercato migrate                           # a one-shot: the migrations
#
# Configuration comes from the environment at run time (see docs/configuration.md): nothing
# secret and no .env is copied in (.dockerignore lets only the package's sources through).
# Without ENVIRONMENT=production and the URLs, a container runs on the embedded defaults.
# tests/deploy/test_container.py builds this runtime without Docker and runs its command.

ARG PYTHON_IMAGE=python:3.11-slim

# uv, the version the lock file is written with (uv_build, the build backend, matches it).
FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

# --- build: the locked dependencies and the package, into a virtualenv at /opt/mercato ---
FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PROJECT_ENVIRONMENT=/opt/mercato \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never
WORKDIR /src
# The dependencies first, in a layer of their own: rebuilt only when the lock file changes.
# The image can trace (OTEL_EXPORTER_OTLP_ENDPOINT) and report errors (SENTRY_DSN): the extras.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --extra tracing --extra sentry --no-install-project
# Then the package itself, installed (not linked) so that /src stays behind in this stage.
COPY README.md ./
COPY src ./src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --extra tracing --extra sentry --no-editable

# --- runtime: the slim Python image, the virtualenv, an unprivileged user ----------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="mercato" \
      org.opencontainers.image.description="Mercato: an e-commerce backend as Python microservices" \
      org.opencontainers.image.licenses="MIT"
# A system user with a fixed numeric id (Kubernetes' runAsNonRoot can only check a number),
# no shell and no home of its own. The only paths it writes: DATA_DIR (notification .eml
# files while SMTP_URL is unset; SQLite files and development keys on the embedded
# defaults) and PROMETHEUS_MULTIPROC_DIR (the workers' metric files). With a read-only root
# filesystem, mount a volume on each (and on /tmp); the VOLUME below gives DATA_DIR one.
RUN groupadd --system --gid 10001 mercato \
    && useradd --system --uid 10001 --gid mercato --no-create-home \
        --home-dir /var/lib/mercato --shell /usr/sbin/nologin mercato \
    && install -d -o mercato -g mercato -m 0750 /var/lib/mercato /run/prometheus
COPY --from=build /opt/mercato /opt/mercato
ENV PATH=/opt/mercato/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    DATA_DIR=/var/lib/mercato \
    PROMETHEUS_MULTIPROC_DIR=/run/prometheus
VOLUME ["/var/lib/mercato"]
WORKDIR /var/lib/mercato
USER 10001:10001
# gateway (PORT), users, orders, products, auth (USERS_PORT, ...), the worker's --port
EXPOSE 8000 8001 8002 8003 8004 8005
# Liveness of the default command, the gateway on PORT; a container running another
# service checks its own port (docker-compose.yml does). No curl in the slim image.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]
ENTRYPOINT ["mercato"]
CMD ["serve", "gateway"]
