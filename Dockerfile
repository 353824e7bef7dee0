# One image for the Dagster webserver, the daemon, the code location and the ops service.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    ROF_CONFIG=/opt/rof/config.yaml

RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client build-essential \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/rof
COPY pyproject.toml README.md requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock
COPY rof_pipelines ./rof_pipelines
RUN pip install --no-cache-dir --no-deps -e .

COPY config.yaml workspace.yaml alembic.ini ./
COPY migrations ./migrations
COPY sql ./sql
RUN mkdir -p "$DAGSTER_HOME" /opt/rof/data
# The production instance (rendered by `rof instance render`; kept out of the repository root).
COPY deploy/dagster.yaml "$DAGSTER_HOME/dagster.yaml"

# 3000: the Dagster webserver; 8080: `rof ops serve` (/health, /health/live, /health/ready, /metrics;
# system_setup.metrics_port). The profiler's pprof_port (9080) stays unexposed: it is off unless
# enabled and bound to loopback by default.
EXPOSE 3000 8080
# docker-compose picks the role: webserver (default), daemon, `rof ops serve --host 0.0.0.0` (the ops
# service), or a one-off `rof ...` command.
CMD ["dagster-webserver", "-h", "0.0.0.0", "-p", "3000", "-w", "/opt/rof/workspace.yaml"]
