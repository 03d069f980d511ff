# kiln's image: a release build, then a slim runtime that runs as an unprivileged user.
#   docker build -t kiln .
#   docker run -p 8000:8000 kiln            (the embedded default: SQLite and files under /var/lib/kiln)
# docker-compose.yml runs the production topology (Postgres, Redis, MinIO, an API, two workers).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src src
COPY migrations migrations
COPY web-playground web-playground
RUN cargo build --release --locked \
    && strip target/release/kiln

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/kiln --create-home kiln
COPY --from=build /src/target/release/kiln /usr/local/bin/kiln
USER kiln
WORKDIR /var/lib/kiln
ENV KILN_BIND=0.0.0.0:8000 \
    KILN_DATABASE_URL=sqlite:///var/lib/kiln/kiln.db \
    KILN_STORAGE_URL=/var/lib/kiln/objects \
    KILN_WORK_DIR=/var/lib/kiln/work \
    KILN_MODEL_ROOTS=/var/lib/kiln/base-models
VOLUME ["/var/lib/kiln"]
EXPOSE 8000
# /healthz answers while the process serves. A `kiln worker` serves no API: give it
# KILN_METRICS_BIND, which answers /healthz too, and point its health check there
# (docker-compose.yml does).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/healthz || exit 1
ENTRYPOINT ["kiln"]
CMD ["serve"]
