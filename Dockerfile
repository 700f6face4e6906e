# Multi-stage build of the `palaver` binary. Images are built locally
# (`docker build -t palaver:local .`, or `docker compose up --build`); none
# is published. The runtime image holds the binary, the FFmpeg runtime
# libraries and CA certificates; it runs as uid/gid 10001 (secret files
# must be readable by that group, not by the world: deploy/make-secrets.sh).
# The browser client (web/), built with Node; served from
# /usr/local/share/palaver/web (docs/web.md).
FROM node:20-bookworm-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The transcoder links Debian's FFmpeg libraries (bindgen needs clang).
RUN apt-get update && apt-get install -y --no-install-recommends clang libclang-dev pkg-config \
    libavcodec-dev libavformat-dev libavutil-dev libavfilter-dev libswscale-dev libswresample-dev \
    libopus-dev libturbojpeg0-dev \
    && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked -p palaver-server -p palaver-client \
    && cp target/release/palaver target/release/palaver-cli /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    libavcodec59 libavformat59 libavutil57 libavfilter8 libswscale6 libswresample4 \
    libopus0 libturbojpeg0 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 palaver \
    && useradd --system --uid 10001 --gid 10001 --home /var/lib/palaver --create-home palaver
COPY --from=build /usr/local/bin/palaver /usr/local/bin/palaver-cli /usr/local/bin/
COPY --from=web /web/dist /usr/local/share/palaver/web
USER palaver
VOLUME /var/lib/palaver
EXPOSE 8080 8081 8082 9090 7450
ENTRYPOINT ["palaver"]
CMD ["serve", "--data-dir", "/var/lib/palaver", "--listen", "0.0.0.0:8080"]
