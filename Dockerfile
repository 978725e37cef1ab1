# One image for every Orchestrator process (api, coordinator, workers, beat, flower).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md alembic.ini beat_schedule.py resources.yaml ./
COPY orchestrator ./orchestrator
COPY workers ./workers
COPY alembic ./alembic
COPY templates ./templates
COPY demo ./demo
RUN pip install --no-cache-dir .
ENV ORCH_DATA_DIR=/var/lib/orchestrator
EXPOSE 8000
CMD ["orchestrator", "api", "--host", "0.0.0.0", "--port", "8000"]
