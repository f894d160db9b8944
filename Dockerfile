# batchrunner as a job image. The entrypoint is `python -m batchrunner`, so the
# container's arguments are batchrunner's: INPUT and options (see deploy/).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY batchrunner ./batchrunner
# The package from this repository, then an unprivileged user that owns only the
# working directory (results of local paths, and the temporary copies of blobs
# go to /tmp).
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /work --create-home batchrunner

USER 10001
WORKDIR /work
ENTRYPOINT ["python", "-m", "batchrunner"]
CMD ["--help"]
