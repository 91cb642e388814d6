# Repogate: build the wheel in one stage, install only the wheel in the next.
#
#   docker build -t repogate .
#   docker run --rm -p 50051:50051 -v repogate-data:/data repogate
#
# Configuration is REPOGATE_* environment variables (server/settings.py), e.g.
#   -e REPOGATE_DATABASE_URL=postgresql://user:pass@db:5432/repogate
# Without one, the server uses SQLite in /data/repogate.db (mount a volume
# there to keep it). The server migrates the schema at start; to run the
# migrations as a separate step, use `repogate migrate` and `repogate serve --no-migrate`.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# Only what the wheel is built from (pyproject.toml: packages in . and generated/).
COPY pyproject.toml README.md ./
COPY server ./server
COPY repositories ./repositories
COPY generated ./generated
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# The wheel only; its dependencies come from the index.
COPY --from=builder /wheels /tmp/wheels
RUN pip install /tmp/wheels/repogate-*.whl \
 && rm -rf /tmp/wheels \
 && groupadd --system --gid 10001 repogate \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin repogate \
 && mkdir -p /data \
 && chown 10001:10001 /data

# The default database URL (sqlite:///./repogate.db) is relative: it lands here.
WORKDIR /data
USER 10001:10001

# Drain calls for less than `docker stop`'s default 10 s before it sends SIGKILL.
# 0.0.0.0 inside a container is reached only through published ports or the pod's
# network, so the image opts in to serving it without authentication; anything
# wider should set REPOGATE_AUTH_MODE (and TLS) instead.
ENV REPOGATE_LISTEN=0.0.0.0:50051 \
    REPOGATE_ALLOW_UNAUTHENTICATED_NETWORK=true \
    REPOGATE_SHUTDOWN_GRACE=8
EXPOSE 50051

# REPOGATE_LISTEN is 0.0.0.0 (bind everywhere), so dial loopback explicitly.
# If you change the port, override this too (docker run --health-cmd ...). It asks
# `liveness`, the process alone: an engine that restarts unhealthy containers must not
# restart every replica while the database is away (`readiness` is for routing).
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["repogate", "health", "--listen", "127.0.0.1:50051", "--service", "liveness", "--timeout", "3"]

# SIGTERM (and SIGINT) stop the server gracefully: NOT_SERVING, drain, exit 0.
STOPSIGNAL SIGTERM
CMD ["repogate", "serve"]
