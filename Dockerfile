# One image for every scale-out service (Airflow components, Spark master/worker, the query API).
FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless make procps \
    && rm -rf /var/lib/apt/lists/*
ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    AIRFLOW_HOME=/opt/airflow \
    WEAVER_CACHE=/opt/weaver/.cache \
    PYTHONUNBUFFERED=1
WORKDIR /opt/weaver
COPY requirements.txt pyproject.toml README.md ./
COPY weaver ./weaver
RUN pip install --no-cache-dir -r requirements.txt && pip install --no-cache-dir --no-deps -e . \
    && python -m weaver.jars fetch
COPY dags ./dags
COPY plugins ./plugins
COPY spark_jobs ./spark_jobs
COPY expectations ./expectations
