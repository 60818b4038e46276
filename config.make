# Makefile fragment for the addon build (see `config`): runs cargo for the Rust
# static library. cargo tracks its own sources, so the rule always runs and cargo
# decides whether anything needs rebuilding.

cat << END >> $NGX_MAKEFILE

.PHONY: $ngx_migration_lib
$ngx_migration_lib:
	cd "$ngx_addon_dir" && \\
	NGINX_BUILD_DIR="\$(CURDIR)/$NGX_OBJS" NGINX_SOURCE_DIR="\$(CURDIR)" \\
	$NGX_CARGO rustc --release --locked --lib \\
		-p ngx_http_migration_module \\
		--no-default-features \\
		--crate-type staticlib \\
		--target-dir "\$(CURDIR)/$ngx_migration_target_dir"

END
