# syntax=docker/dockerfile:1
# The official nginx image of the version the module is built against, plus the
# module, running as a non-root user on port 8080 (status and health on 8081).
#
#   docker build -t nginx-migration .
#   docker run -p 8080:8080 -p 8081:8081 \
#       -v $PWD/my-migration.yaml:/etc/nginx/migration/migration.yaml:ro nginx-migration
#
# The build stage compiles the module with nginx's own build system
# (./configure --with-compat --add-dynamic-module), which is what makes the .so
# binary-compatible with the official image. There is no Docker engine in CI:
# scripts/check-addon-build.sh runs these same steps against the vendored nginx
# source and an nginx configured with this image's `nginx -V` arguments, and the
# whole t/ suite runs against that pair; hadolint checks this file.
#
# Do not name a build ARG NGX_VERSION: the nginx-src crate would download nginx.
ARG NGINX_VERSION=1.28.3

# Same Debian release (trixie) as the nginx image, so the module links against the
# glibc it runs with.
FROM rust:1.95-trixie AS build
ARG NGINX_VERSION
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Build-only packages from the Debian release the tag pins; their exact versions
# follow Debian's security updates (pinning them would break the build when the
# mirror drops the old version), and none of them reaches the final image.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libclang-dev libpcre2-dev libssl-dev zlib1g-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /build
RUN curl -fsSL "https://nginx.org/download/nginx-${NGINX_VERSION}.tar.gz" | tar -xz
COPY Cargo.toml Cargo.lock build.rs config config.make ./module/
COPY src ./module/src
COPY engine ./module/engine
WORKDIR /build/nginx-${NGINX_VERSION}
RUN ./configure --with-compat --add-dynamic-module=/build/module \
 && make -j"$(nproc)" modules \
 && strip --strip-unneeded -o /build/ngx_http_migration_module.so objs/ngx_http_migration_module.so

FROM nginx:${NGINX_VERSION}-trixie
COPY --from=build /build/ngx_http_migration_module.so /usr/lib/nginx/modules/
COPY nginx/container.conf /etc/nginx/nginx.conf
COPY nginx/container-migration.yaml /etc/nginx/migration/migration.yaml
# Non-root: nginx (uid 101, from the image) owns the one directory it writes to;
# the pid file goes to /tmp. Fail the image build, not the first start, if module
# and nginx disagree.
RUN chown -R nginx:nginx /var/cache/nginx \
 && nginx -t
USER 101:101
EXPOSE 8080 8081
# /healthz is on the status listener and never counted as traffic.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8081/healthz"]
CMD ["nginx", "-g", "daemon off;"]
