# mailgate: `make run` and `make test` do all set-up on a fresh Debian machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-compose bench bench-quick bench-servers bench-scale bench-tools lint typecheck check system-packages venv clean

system-packages:
	@bash deploy/install-system-packages.sh

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: system-packages venv
	$(BIN)/mailgate serve

test: system-packages venv
	$(BIN)/ruff check gateway tests bench
	$(BIN)/mypy gateway
	$(BIN)/python -m pytest -q

# The whole mail system from docker-compose.yml with podman-compose: builds the
# images (debian:bookworm made locally with debootstrap), runs mail through it,
# stops the gateway, upgrades, and removes everything it made. Root; a few minutes.
test-compose:
	@bash deploy/install-container-packages.sh
	$(PYTHON) tests/compose/run.py

# Every scenario with its baseline (docs/benchmarks.md; bench/run.py --help).
# Full sizes take about 10 minutes; bench-quick runs 10 000 accounts.
BENCH_ARGS ?=

bench-tools:
	@command -v wrk >/dev/null || { SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk; }

bench: system-packages venv bench-tools
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# The same app under gunicorn (as before) and granian (now), side by side (docs/servers.md).
bench-servers: system-packages venv bench-tools
	$(BIN)/python bench/servers.py $(BENCH_ARGS)

bench-quick: system-packages venv bench-tools
	$(BIN)/python bench/run.py --quick --out /tmp/mailgate-benchmarks-quick.md $(BENCH_ARGS)

# Scale-out figures at one million accounts (docs/scaling.md; 30+ minutes).
# bench/scale_bench.py without --accounts runs 100 000.
bench-scale: system-packages venv
	@command -v mdb_stat >/dev/null || { SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lmdb-utils; }
	cd bench && ../$(BIN)/python scale_bench.py --accounts 1000000 $(BENCH_ARGS)

lint: venv
	$(BIN)/ruff check gateway tests bench

typecheck: venv
	$(BIN)/mypy gateway

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
