# Multi-stage build of pgderive on Debian 12, the same packages the project builds
# with everywhere (scripts/install-deps.sh). The final image holds only the binary and
# the shared libraries it links, and runs as an unprivileged user (uid and gid 10001).
# Its state directory /var/lib/pgderive, owned by that user, is a volume: give the
# change log an absolute `spool.dir` under it (e.g. /var/lib/pgderive/shop) and mount a
# named or persistent volume there. The configuration is mounted read-only, usually at
# /etc/pgderive, where the default spool.dir (beside the file) could not be written.
FROM debian:12-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      g++ cmake ninja-build pkg-config \
      libpq-dev libpqxx-dev libhiredis-dev nlohmann-json3-dev libyaml-cpp-dev \
      libcurl4-openssl-dev libspdlog-dev libfmt-dev libcli11-dev libcpp-httplib-dev \
      libsimdjson-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPGDERIVE_BUILD_TESTS=OFF \
 && ninja -C /build pgderive \
 && strip /build/app/pgderive

FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates libpq5 libpqxx-6.4 libhiredis0.14 libyaml-cpp0.7 libcurl4 \
      libspdlog1.10 libfmt9 libsimdjson14 libcpp-httplib0.11 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 pgderive \
 && useradd --system --uid 10001 --gid pgderive --no-create-home --home-dir /var/lib/pgderive \
      --shell /usr/sbin/nologin pgderive \
 && install -d -m 0750 -o pgderive -g pgderive /var/lib/pgderive
COPY --from=build /build/app/pgderive /usr/local/bin/pgderive
# The change log (spool.dir) lives here; a new named volume takes this directory's owner.
VOLUME /var/lib/pgderive
USER pgderive
# /healthz, /readyz, /metrics, /status (http.listen; 0.0.0.0:9187 in a container)
EXPOSE 9187
ENTRYPOINT ["/usr/local/bin/pgderive"]
CMD ["run", "-c", "/etc/pgderive/pgderive.yml"]
