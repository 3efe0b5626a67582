# Another base image: --build-arg PYTHON_IMAGE=... (compose passes $PYTHON_IMAGE).
ARG PYTHON_IMAGE=python:3.12-slim
FROM ${PYTHON_IMAGE}

# The worker runs as an unprivileged user; records arrive on a read-only volume.
RUN useradd --create-home --uid 10001 nxexport \
    && mkdir -p /archive && chown nxexport /archive
WORKDIR /app
COPY pyproject.toml requirements.lock README.md ./
COPY worker ./worker
COPY tasks ./tasks
COPY destinations ./destinations
RUN pip install --no-cache-dir --constraint requirements.lock .

USER nxexport
ENV NX_EXPORT_STATE_DIR=/home/nxexport/state
CMD ["nx-export", "worker", "--pool", "threads", "--concurrency", "16"]
