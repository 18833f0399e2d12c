# ai-usage-exporter sidecar: HTTP ingest on 9478, /metrics for Prometheus, SQLite ledger in /data.
# Pinned to an exact Python release: a rebuild gets the same interpreter it was tested on.
FROM python:3.11.12-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
# The project's own dependencies are bounded in pyproject.toml.
RUN pip install --no-cache-dir './[postgres]' \
    && useradd --system --uid 10001 --home-dir /data --no-create-home exporter \
    && mkdir -p /data && chown 10001 /data

# By number: a runtime that cannot resolve names still knows not to run as root.
USER 10001
VOLUME ["/data"]
EXPOSE 9478
ENV AI_USAGE_EXPORTER_HOST=0.0.0.0 \
    AI_USAGE_EXPORTER_PORT=9478 \
    AI_USAGE_EXPORTER_DB=/data/ai-usage.db
# Reads the same settings as the server (port, TLS, config file), so a changed port or
# HTTPS is probed where the server really listens.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
    CMD ["ai-usage-exporter", "healthcheck"]
# Listening on 0.0.0.0 needs a write token at run time: AI_USAGE_EXPORTER_WRITE_TOKEN or
# AI_USAGE_EXPORTER_WRITE_TOKEN_FILE (a mounted secret), or
# AI_USAGE_EXPORTER_ALLOW_UNAUTHENTICATED=true on a trusted network. See the README.
ENTRYPOINT ["ai-usage-exporter", "serve"]
