# Top-level build. `make` builds everything; `make run` sets up a machine and starts a local
# cluster; `make test` runs every test. See README.md.

ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
BUILD_TYPE ?= debug
PG_INSTALL := $(ROOT)/pg_install/v15
PG_CONFIG := $(PG_INSTALL)/bin/pg_config
CARGO_PROFILE_FLAG := $(if $(filter release,$(BUILD_TYPE)),--release,)
PGXN_EXTENSIONS := $(patsubst %/Makefile,%,$(wildcard pgxn/*/Makefile))

export BUILD_TYPE

.PHONY: all postgres pgxn neon deps run test test-rust test-python check fmt clean distclean

all: postgres neon

# Our patched PostgreSQL 15 (+ contrib) in pg_install/v15, then our extensions from pgxn/.
postgres:
	scripts/build-postgres.sh
	$(MAKE) pgxn

# An extension built against another PostgreSQL build (other patches or flags) is rebuilt
# from clean: its objects may depend on changed headers.
pgxn:
	@key=$$(cat $(PG_INSTALL)/.neon-build-key); \
	for ext in $(PGXN_EXTENSIONS); do \
	  if [ "$$(cat $$ext/.neon-build-key 2>/dev/null)" != "$$key" ]; then \
	    $(MAKE) -C $$ext PG_CONFIG=$(PG_CONFIG) USE_PGXS=1 -s clean || exit 1; \
	  fi; \
	  echo "building $$ext"; \
	  $(MAKE) -C $$ext PG_CONFIG=$(PG_CONFIG) USE_PGXS=1 -s install || exit 1; \
	  echo "$$key" > $$ext/.neon-build-key; \
	done

neon:
	cargo build --workspace --bins $(CARGO_PROFILE_FLAG)

# System packages (build deps, protoc, stock PostgreSQL) and the Python test environment.
deps:
	scripts/install-system-deps.sh
	scripts/setup-python-env.sh

run: deps all
	scripts/run-local.sh

test: deps all test-rust test-python

test-rust:
	scripts/cargo-test.sh $(CARGO_PROFILE_FLAG)

test-python:
	scripts/pytest

check:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	.venv/bin/ruff check test_runner
	.venv/bin/ruff format --check test_runner

fmt:
	cargo fmt --all

clean:
	cargo clean
	rm -rf build/v15 test_output

distclean: clean
	rm -rf build pg_install .venv .neon
