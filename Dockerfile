# Build
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin tandem

# Run
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/tandem --create-home tandem
COPY --from=build /src/target/release/tandem /usr/local/bin/tandem
USER tandem
WORKDIR /var/lib/tandem
ENV TANDEM_BIND=0.0.0.0:8080 \
    DATABASE_URL=sqlite:///var/lib/tandem/tandem.db?mode=rwc \
    RUST_LOG=info
# TANDEM_JWT_SECRET must be provided: without it the server refuses a non-loopback bind.
EXPOSE 8080
VOLUME ["/var/lib/tandem"]
ENTRYPOINT ["tandem"]
CMD ["serve"]
