# ngx_http_migration_module — build, demo, test, bench (SPEC "Files and build outputs").
#
#   make build   nginx (vendored source) + the module, installed as a runnable prefix in target/nginx/
#   make demo    build, then start nginx on 127.0.0.1:8080 with nginx/nginx.conf + nginx/migration.yaml
#   make test    build, then cargo test + prove -r t/ + the nginx addon build
#   make bench   criterion benchmarks of the decision engine, then bench/wrk.sh

SHELL := /bin/bash
CARGO ?= cargo
PREFIX := $(CURDIR)/target/nginx
# One set of configure flags for every build: a change would rebuild nginx.
export NGX_CONFIGURE_ARGS := --with-http_stub_status_module
APT_PACKAGES := libclang-dev libpcre2-dev libssl-dev zlib1g-dev pkg-config make perl libtest-base-perl wrk curl python3 python3-prometheus-client
DEMO_PORT := 8080

.PHONY: build deps demo demo-stop test test-unit test-e2e test-addon bench

build: deps
	$(CARGO) build --release --locked -p ngx_http_migration_module
	@scripts/install-prefix.sh "$(PREFIX)"

# Installs missing system packages when run as root (CI, a fresh machine).
deps:
	@scripts/install-deps.sh $(APT_PACKAGES)

demo: build
	@scripts/demo.sh "$(PREFIX)" $(DEMO_PORT)

demo-stop:
	@if [ -f "$(PREFIX)/logs/nginx.pid" ]; then kill -QUIT $$(cat "$(PREFIX)/logs/nginx.pid") && echo "demo stopped"; fi

test: build test-unit test-e2e test-addon

test-unit:
	$(CARGO) test --release --locked -p migration-engine

test-e2e:
	prove -r t/

# The nginx addon files (config, config.make), as the Dockerfile's build stage uses them.
test-addon:
	scripts/check-addon-build.sh

bench: build
	$(CARGO) bench --locked -p migration-engine --bench decide
	bench/wrk.sh
