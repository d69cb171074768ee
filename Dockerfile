# The plantops image: Airflow 3.3 with the pinned dependency set and a JRE for spark-submit.
FROM apache/airflow:3.3.2-python3.11
USER root
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*
USER airflow
COPY requirements.txt requirements-nodeps.txt /opt/plantops/
RUN pip install --no-cache-dir -r /opt/plantops/requirements.txt \
    && pip install --no-cache-dir --no-deps -r /opt/plantops/requirements-nodeps.txt
ENV PYTHONPATH=/opt/plantops/include:/opt/plantops
