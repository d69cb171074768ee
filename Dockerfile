# The plantops image: Airflow 3.3 with the pinned dependency set and a JRE for spark-submit.
# docker-compose.yaml runs every Airflow component and the MLflow server from it.
FROM apache/airflow:3.3.2-python3.11
USER root
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*
# Mount points of the compose named volumes (PLANTOPS_HOME, MLflow artifacts). A new named volume
# copies the owner and mode of its mount point, so they must exist here, group 0 writable like
# /opt/airflow: the containers may run as any uid (AIRFLOW_UID) with gid 0.
RUN mkdir -p /opt/plantops/data /mlartifacts \
    && chown airflow:0 /opt/plantops /opt/plantops/data /mlartifacts \
    && chmod 2775 /opt/plantops/data /mlartifacts
USER airflow
COPY requirements.txt requirements-nodeps.txt /opt/plantops/
RUN pip install --no-cache-dir -r /opt/plantops/requirements.txt \
    && pip install --no-cache-dir --no-deps -r /opt/plantops/requirements-nodeps.txt
ENV PYTHONPATH=/opt/plantops/include:/opt/plantops
# The repo itself, for pods (execution: kubernetes) and images without the compose bind mounts.
COPY --chown=airflow:0 dags /opt/plantops/dags
COPY --chown=airflow:0 plugins /opt/plantops/plugins
COPY --chown=airflow:0 include /opt/plantops/include
COPY --chown=airflow:0 spark_jobs /opt/plantops/spark_jobs
