# One image, two roles: `loudou serve` (default) and `loudou worker`.
#   docker build -t loudou .
#   docker run -e DATABASE_URL=... -e REDIS_URL=... -p 8000:8000 loudou
#   docker run -e DATABASE_URL=... -e REDIS_URL=... loudou loudou worker
#   docker run -e DATABASE_URL=... loudou loudou migrate
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LOUDOU_HOME=/var/lib/loudou
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin loudou \
 && mkdir -p /var/lib/loudou && chown loudou:loudou /var/lib/loudou
WORKDIR /srv/loudou
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# `loudou migrate` finds these in the working directory.
COPY alembic.ini ./
COPY migrations ./migrations
USER loudou
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status != 200)"
CMD ["loudou", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
