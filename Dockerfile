# hookline: one image, a role per command (`hookline ingest`, ...).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin hookline

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/hookline /usr/local/bin/hookline
USER 65532:65532
ENTRYPOINT ["hookline"]
