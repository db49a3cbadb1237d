# syntax=docker/dockerfile:1
# The image runs the wheel, never the source tree. CI proves this file without Docker:
# .ci/boot-wheel builds the same wheel from the same context (.dockerignore), installs it
# into a fresh virtualenv outside the checkout, then runs this file's CMD and HEALTHCHECK
# (read from here, verbatim) against PostgreSQL and Redis and loads pages and /readyz.

FROM python:3.11-slim AS wheel
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --create-home --uid 10001 lango \
    && install -d -o lango -g lango /home/lango/.lango
USER lango
# The data folder (KYC documents in .lango/kyc): docker-compose mounts a volume on it.
WORKDIR /home/lango
ENV PYTHONUNBUFFERED=1 BIND=0.0.0.0:8000
EXPOSE 8000
# Ready = PostgreSQL, Redis and every schema at head (a 503 from /readyz fails the check).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ['BIND'].rsplit(':', 1)[1], timeout=4)"]
# Migrate (public, then every tenant behind head), then serve; gunicorn reads BIND,
# WEB_CONCURRENCY and WEB_THREADS (core/gunicorn_conf.py).
CMD ["sh", "-c", "lango db upgrade --quiet && exec gunicorn -c python:core.gunicorn_conf wsgi:app"]
