# Tessera's container image: one image for every role (tessera read|write|worker|storage|serve|
# migrate|ring|...). Build:  docker build -t tessera .      (from the public debian:12)
#                   tests:  deploy/docker/docker.sh build  (from local/debian:12, made offline)
# Runs as the unprivileged user tessera (uid 10001); data in the volume /var/lib/tessera.
# Settings come from TESSERA_<SECTION>_<KEY> variables and mounted files (--config FILE,
# secrets named by *_file settings); docs/deployment.md, "Containers".
ARG BASE=debian:12

# ---- build: the project's own build (CMake, warnings as errors), the program only
FROM ${BASE} AS build
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      build-essential cmake pkg-config libmicrohttpd-dev libjansson-dev libinih-dev \
      libvips-dev libsqlite3-dev libssl-dev libcurl4-openssl-dev libpq-dev libhiredis-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake cmake
COPY web web
COPY src src
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTESSERA_WERROR=ON -DTESSERA_TESTS=OFF \
 && cmake --build build -j "$(nproc)" --target tessera \
 && strip --strip-debug -o /tessera build/tessera \
 # the runtime stage installs the Debian packages of the libraries the program links directly
 # (apt brings what those need): each NEEDED soname, found where the loader finds it
 && objdump -p /tessera | awk '$1 == "NEEDED" {print $2}' | while read -r so; do \
      lib=$(ldd /tessera | awk -v so="$so" '$1 == so {print $3}'); \
      dpkg -S "*/$(basename "$(dirname "$lib")")/$so"; done \
    | cut -d: -f1 | sort -u >/runtime-packages \
 && echo "runtime packages:" $(cat /runtime-packages)

# ---- runtime: the program, its shared libraries, curl for the health check; no compiler
FROM ${BASE}
COPY --from=build /runtime-packages /tmp/runtime-packages
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      ca-certificates curl $(cat /tmp/runtime-packages) \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /var/log/apt /var/log/dpkg.log \
      /tmp/runtime-packages \
 && groupadd --gid 10001 tessera \
 && useradd --uid 10001 --gid tessera --home-dir /var/lib/tessera --no-create-home \
      --shell /usr/sbin/nologin tessera \
 && install -d -o tessera -g tessera -m 750 /var/lib/tessera
COPY --from=build /tessera /usr/local/bin/tessera
COPY deploy/docker/healthcheck /usr/local/bin/tessera-healthcheck

# Defaults for a container: listen on every address of its network, data in the volume. Any
# TESSERA_<SECTION>_<KEY> given at run time takes precedence, flags over both.
ENV TESSERA_SERVER_LISTEN=0.0.0.0:8080 \
    TESSERA_STORAGE_DATA_DIR=/var/lib/tessera
VOLUME /var/lib/tessera
WORKDIR /var/lib/tessera
USER tessera:tessera
EXPOSE 8080
# /healthz of the role's own listen address (TESSERA_HEALTHCHECK_URL overrides; the worker has
# no HTTP port: its compose service turns the check off)
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 CMD ["tessera-healthcheck"]
# SIGTERM: the service stops accepting, finishes the requests in flight within
# server.shutdown_timeout (10 s) and exits; give `docker stop -t` more than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["tessera"]
CMD ["serve"]
