# The audit exporter (python -m cluster.audit) for the kind platform: it runs beside Vault in its pod
# and reads the audit volume (cluster/kind/monitoring.py). The context is only this file and the
# exporter's modules (cluster/kind/exporterimage.py), never the repository or a run's files.
# BASE is [images] audit_exporter_base in cluster/versions.toml; PROMETHEUS_CLIENT is the version the
# suite itself is tested with.
ARG BASE
FROM ${BASE}
ARG PROMETHEUS_CLIENT
RUN pip install --no-cache-dir --disable-pip-version-check "prometheus-client==${PROMETHEUS_CLIENT}"
COPY cluster /app/cluster
# Readable by any user (the pod runs it as Vault's), whatever umask the context was made under.
RUN chmod -R a+rX /app
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1
# The pod's securityContext sets the user (Vault's, to read its 0600 log); this is only the default.
USER 65532:65532
ENTRYPOINT ["python", "-m", "cluster.audit"]
