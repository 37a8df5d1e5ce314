# syntax=docker/dockerfile:1
# bucket-scanner: a one-shot listing job. Build: docker build -t bucket-scanner .
# Run:   docker run --rm -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY \
#          bucket-scanner scan s3://my-bucket/prefix -o - > objects.jsonl

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/scanner
COPY requirements/runtime.lock requirements/runtime.lock
RUN /opt/scanner/bin/pip install --no-compile -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY scanner ./scanner
RUN /opt/scanner/bin/pip install --no-compile --no-deps . \
    && /opt/scanner/bin/python -m compileall -q /opt/scanner/lib \
    && /opt/scanner/bin/pip uninstall -y pip setuptools

FROM ${PYTHON_IMAGE}
# Spill files and atomic-output temporaries go to /tmp: mount an emptyDir there when the root
# filesystem is read-only.
ENV PATH=/opt/scanner/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp
RUN groupadd --system --gid 10001 scanner \
    && useradd --system --uid 10001 --gid scanner --no-create-home --home-dir /nonexistent scanner
COPY --from=build /opt/scanner /opt/scanner
USER 10001:10001
WORKDIR /tmp
STOPSIGNAL SIGTERM
ENTRYPOINT ["scanner"]
CMD ["scan", "--help"]
