# `mlops serve` in a container: docker build -t mlops . && docker run -v REG:/registry:ro -p 8080:8080 mlops MODEL_REF --host 0.0.0.0
# BASE is any Debian-like image with python3 (3.11+) and its venv module: python:3.11-slim by default;
# `make container-test` builds on a debootstrapped Debian bookworm instead (no image can be pulled there).
ARG BASE=python:3.11-slim
FROM ${BASE}

# The project lives in a virtual environment, so the same steps work whether the base's python3 is Debian's
# (where plain `python` may not exist and pip refuses the system site) or python.org's.
ENV VIRTUAL_ENV=/opt/mlops \
    PATH=/opt/mlops/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    MLOPS_REGISTRY=/registry

COPY pyproject.toml README.md /tmp/src/
COPY mlops_cli /tmp/src/mlops_cli
RUN python3 -m venv /opt/mlops \
    && /opt/mlops/bin/python3 -m pip install --no-cache-dir '/tmp/src[serve,onnx]' \
    && rm -rf /tmp/src \
    && groupadd --system --gid 10001 mlops \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin mlops

# Numeric, so Kubernetes' runAsNonRoot can check it. The image writes only to /tmp (a tmpfs or emptyDir when the
# root filesystem is read-only); the registry is mounted read-only at /registry and must be readable by this user.
USER 10001:10001
WORKDIR /tmp

EXPOSE 8080
# Liveness only: readiness (/readyz) is the orchestrator's business. urllib, because slim images have no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/livez', timeout=4)"]

# The supervisor is PID 1 and handles SIGTERM itself: readiness off, drain (up to --drain-s 30), exit 0.
ENTRYPOINT ["mlops", "serve"]
# Arguments after the image name replace these: give the model and --host 0.0.0.0, e.g.
#   docker run ... IMAGE flights@production --host 0.0.0.0 --workers 2
CMD ["--host", "0.0.0.0", "--port", "8080"]
