# syntax=docker/dockerfile:1
# Official nginx of the version the module is built against, plus the module.
#
#   docker build -t nginx-migration .
#   docker run -p 8080:8080 -v $PWD/nginx/migration.yaml:/etc/nginx/conf/migration.yaml:ro nginx-migration
#
# The build stage compiles the module with nginx's own build system
# (./configure --with-compat --add-dynamic-module), which is what makes the .so
# binary-compatible with the official image. scripts/check-addon-build.sh runs the
# same steps against the vendored nginx source in CI (no Docker engine there).

ARG NGINX_VERSION=1.28.3

FROM rust:1-bookworm AS build
ARG NGINX_VERSION
RUN apt-get update \
 && apt-get install -y --no-install-recommends libclang-dev libpcre2-dev libssl-dev zlib1g-dev pkg-config curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /build
RUN curl -fsSL "https://nginx.org/download/nginx-${NGINX_VERSION}.tar.gz" | tar -xz
COPY Cargo.toml Cargo.lock build.rs config config.make ./module/
COPY src ./module/src
COPY engine ./module/engine
WORKDIR /build/nginx-${NGINX_VERSION}
RUN ./configure --with-compat --add-dynamic-module=/build/module \
 && make -j"$(nproc)" modules \
 && cp objs/ngx_http_migration_module.so /build/

FROM nginx:${NGINX_VERSION}
COPY --from=build /build/ngx_http_migration_module.so /usr/lib/nginx/modules/
COPY nginx/migration.yaml /etc/nginx/conf/migration.yaml
COPY nginx/nginx.conf /etc/nginx/nginx.conf
# The example listens on loopback for the demo; in a container it must listen on all
# addresses. Fail the image build, not the first start, if module and nginx disagree.
RUN mkdir -p /etc/nginx/logs \
 && sed -i 's/listen 127.0.0.1:8080;/listen 8080;/' /etc/nginx/nginx.conf \
 && nginx -t
EXPOSE 8080
CMD ["nginx", "-g", "daemon off;"]
