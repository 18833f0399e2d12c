# ai-usage-exporter sidecar: HTTP ingest on 9478, /metrics for Prometheus, SQLite ledger in /data.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install '.[postgres]' && useradd --system --uid 10001 --home /data exporter \
    && mkdir -p /data && chown exporter /data

USER exporter
VOLUME ["/data"]
EXPOSE 9478
ENV AI_USAGE_EXPORTER_HOST=0.0.0.0 \
    AI_USAGE_EXPORTER_PORT=9478 \
    AI_USAGE_EXPORTER_DB=/data/ai-usage.db
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9478/healthz', timeout=2)"
# Listening on 0.0.0.0 needs AI_USAGE_EXPORTER_WRITE_TOKEN (and READ_TOKEN) set at run
# time, or AI_USAGE_EXPORTER_ALLOW_UNAUTHENTICATED=true on a trusted network.
ENTRYPOINT ["ai-usage-exporter", "serve"]
