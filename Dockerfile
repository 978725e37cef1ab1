# One image for every Orchestrator process (api, coordinator, workers, beat, flower).
# `make up` builds it; tests/unit/test_layout.py checks that every COPY source exists, that it
# runs as a non-root user and that it has a HEALTHCHECK (no Docker engine needed for that).
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed, unprivileged uid/gid, so that volumes and `runAsNonRoot` policies can name it.
RUN groupadd --system --gid 10001 orchestrator \
 && useradd --system --uid 10001 --gid orchestrator --home-dir /app --shell /usr/sbin/nologin orchestrator

WORKDIR /app
COPY pyproject.toml README.md alembic.ini beat_schedule.py resources.yaml ./
COPY orchestrator ./orchestrator
COPY workers ./workers
COPY alembic ./alembic
COPY templates ./templates
RUN pip install . \
 && mkdir -p /var/lib/orchestrator /run/orchestrator-metrics \
 && chown -R orchestrator:orchestrator /var/lib/orchestrator /run/orchestrator-metrics

# PROMETHEUS_MULTIPROC_DIR: every process of the container (gunicorn workers, prefork
# children) writes its metrics there and the exposed page sums them (README, "Metrics").
ENV ORCH_DATA_DIR=/var/lib/orchestrator \
    PROMETHEUS_MULTIPROC_DIR=/run/orchestrator-metrics

USER 10001:10001
EXPOSE 8000
# The API's liveness; worker services in compose.yaml override it with a Celery ping.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["orchestrator", "api", "--host", "0.0.0.0", "--port", "8000"]
