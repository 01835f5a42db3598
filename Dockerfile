# dbopt in a container: CI jobs and Kubernetes CronJobs (refresh-views). See docs/container.md.
#   docker build -t dbopt .
#   docker run --rm -v "$PWD:/work" -e DATABASE_URL dbopt plan --exit-code
# Build stage: the wheel, from the same sources as `pip install .` (no tests, no tools).
FROM python:3.12.8-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE MANIFEST.in constraints.txt ./
COPY dbopt ./dbopt
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && cp constraints.txt /wheels/

# Runtime: the wheel and its runtime dependencies only (psycopg[binary] brings its own libpq),
# each at the version the test suite ran with (constraints.txt).
FROM python:3.12.8-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
# /work belongs to the runtime user: `verify --save`, `stats -o`, `doctor -o` and the like write
# there even when no volume is mounted.
RUN pip install --no-cache-dir --constraint /wheels/constraints.txt /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --create-home --uid 10001 --user-group dbopt \
    && install --directory --owner 10001 --group 10001 /work
# A numeric user, so Kubernetes' runAsNonRoot can check it without /etc/passwd.
USER 10001
# The project (dbopt.yaml, indexes/, views/) is mounted or copied here.
WORKDIR /work
ENTRYPOINT ["dbopt"]
CMD ["--help"]
