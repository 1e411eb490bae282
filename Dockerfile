# One image for every service of docker-compose.yml (Airflow components, Spark master/worker, the
# query API). The install steps are the Makefile's (`make install jars`): the pinned requirements
# (Airflow's Postgres drivers psycopg2 and asyncpg among them), the editable package, the Delta jars.
# No container engine runs on the development machines or in CI, so this build is not run there;
# `weaver services up` runs the same compose services as local processes instead.
FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless make procps curl \
    && rm -rf /var/lib/apt/lists/*
# The non-root user of docker-compose.yml (`user: "50000:0"`), as in Airflow's official image.
RUN useradd --uid 50000 --gid 0 --home-dir /opt/airflow --create-home airflow \
    && mkdir -p /opt/weaver /opt/airflow/logs /data/lake /opt/spark \
    && chown -R 50000:0 /opt/weaver /opt/airflow /data/lake /opt/spark
ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    AIRFLOW_HOME=/opt/airflow \
    WEAVER_CACHE=/opt/weaver/.cache \
    PYTHONUNBUFFERED=1
WORKDIR /opt/weaver
COPY --chown=50000:0 requirements.txt pyproject.toml README.md Makefile ./
COPY --chown=50000:0 weaver ./weaver
# Same as the Makefile's install and jars targets.
RUN python -m pip install --quiet --disable-pip-version-check -r requirements.txt \
    && python -m pip install --quiet --disable-pip-version-check --no-deps -e . \
    && python -m weaver.core.jars fetch \
    && chown -R 50000:0 /opt/weaver/.cache
COPY --chown=50000:0 dags ./dags
COPY --chown=50000:0 plugins ./plugins
COPY --chown=50000:0 spark_jobs ./spark_jobs
COPY --chown=50000:0 expectations ./expectations
USER 50000:0
