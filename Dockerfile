# keygate container image: a Debian 12 build stage, then a slim runtime stage that holds only the
# binary, its shared libraries, the default config and an empty data volume.
#
#   docker build -t keygate .            (or: podman build -t keygate .)
#   docker run -d --name keygate -p 8080:8080 -v keygate-data:/var/lib/keygate \
#       -e KEYGATE_UPSTREAM=http://your-service:3000 keygate
#   docker exec keygate keygate keys create --name my-app
#
# Arguments after the image name are passed to `keygate serve`; `docker run --rm keygate -t`
# checks the configuration and exits.

############################################ build ############################################
FROM debian:12 AS build

ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        build-essential cmake ninja-build pkg-config \
        libmicrohttpd-dev libsodium-dev libsqlite3-dev libjansson-dev libcurl4-openssl-dev \
        libhiredis-dev libpq-dev node-llhttp \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .
# No tests and no benchmarks in the image: cmocka is not installed here on purpose.
RUN cmake -S . -B /build -G Ninja \
        -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_INSTALL_PREFIX=/usr/local \
        -DKEYGATE_TESTS=OFF -DKEYGATE_BENCH=OFF \
 && cmake --build /build \
 && DESTDIR=/staging cmake --install /build --strip

########################################### runtime ###########################################
FROM debian:12-slim

ARG DEBIAN_FRONTEND=noninteractive
# Only what the binary links against (plus CA certificates for https:// upstreams): no compiler,
# no curl binary, no package lists or apt caches left behind. Documentation, man pages and
# translations are not unpacked (copyright files are), as in Debian's own slim images.
RUN printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
        'path-exclude /usr/share/locale/*' 'path-exclude /usr/share/lintian/*' \
        > /etc/dpkg/dpkg.cfg.d/keygate-slim \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
        libmicrohttpd12 libsodium23 libsqlite3-0 libjansson4 libcurl4 libhiredis0.14 libpq5 ca-certificates \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin

# A fixed uid/gid so a volume or a bind mount can be prepared with the right owner beforehand.
# It is a locked account with no login shell; not --system only because useradd warns about a
# system uid above 999.
RUN groupadd --gid 10001 keygate \
 && useradd --uid 10001 --gid keygate --home-dir /var/lib/keygate --no-create-home \
        --no-log-init --shell /usr/sbin/nologin keygate \
 && install -d -o keygate -g keygate -m 0700 /var/lib/keygate

COPY --from=build /staging/usr/local/bin/keygate /usr/local/bin/keygate
COPY conf/keygate.conf /etc/keygate/keygate.conf
# Fails the build here, not at the first start, if a shared library is missing.
RUN keygate --version

# The database and the server secret both live in the volume: back them up together, since
# losing the secret invalidates every key. KEYGATE_UPSTREAM is for the operator to set.
ENV KEYGATE_CONFIG=/etc/keygate/keygate.conf \
    KEYGATE_LISTEN=0.0.0.0:8080 \
    KEYGATE_DATABASE=/var/lib/keygate/keygate.db \
    KEYGATE_SECRET_FILE=/var/lib/keygate/secret

LABEL org.opencontainers.image.title="keygate" \
      org.opencontainers.image.description="HTTP API-key authentication gateway" \
      org.opencontainers.image.licenses="Apache-2.0"

VOLUME /var/lib/keygate
WORKDIR /var/lib/keygate
EXPOSE 8080
# Asks GET /readyz on the admin listener, which listens on 127.0.0.1:8081 inside the container
# (conf/keygate.conf): no curl in the image, and nothing to publish for it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["keygate", "healthcheck"]
USER keygate:keygate
ENTRYPOINT ["keygate", "serve"]
