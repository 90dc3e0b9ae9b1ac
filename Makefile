# adaptflow: the usual targets. `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0

.PHONY: all install redis demo test test-slow lint format bench clean

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: pip then finds the CPU build on disk instead of pulling the CUDA one
# as a dependency of stable-baselines3. Then every extra (see README, "Install").
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

# The live tests start a real redis-server on loopback; on a fresh Debian machine install it.
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "installing Debian's redis-server for the live tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	@command -v redis-server >/dev/null 2>&1 || { echo "redis-server is required by the live tests"; exit 1; }

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/adaptflow train configs/train/quickstart.yaml

# The live tests (real workers and Redis) in one process, one at a time, at the normal priority;
# the rest beside them in two processes at a lower one (nice 10): the live tests mostly wait on
# their workers, so the rest take every core those leave idle, and a live test's workers still
# get the CPU first (tests/conftest.py). One BLAS/OpenMP thread each: more on two cores only
# contend. The live run's report is printed after the rest's; either failing fails the target.
THREADS := OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
test: lint redis
	@log=$$(mktemp); \
	$(THREADS) $(BIN)/python -m pytest -m "live and not slow" -p no:cacheprovider >$$log 2>&1 & live=$$!; \
	$(THREADS) nice -n 10 $(BIN)/python -m pytest -m "not live and not slow" -n 2 --dist loadgroup; rest=$$?; \
	wait $$live; lived=$$?; echo "---- the live tests ----"; cat $$log; rm -f $$log; \
	[ $$rest -eq 0 ] && [ $$lived -eq 0 ]

test-slow: $(STAMP) redis
	$(BIN)/python -m pytest -m slow

# ruff, then the import contracts of pyproject.toml ([tool.importlinter]; docs/architecture.md).
lint: $(STAMP)
	$(BIN)/ruff check adaptflow tests benchmarks examples
	$(BIN)/lint-imports --no-logo

format: $(STAMP)
	$(BIN)/ruff format adaptflow tests benchmarks examples
	$(BIN)/ruff check --fix adaptflow tests benchmarks examples

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_simulator.py
	$(BIN)/python benchmarks/bench_dag.py
	$(BIN)/python benchmarks/bench_env.py
	$(BIN)/python benchmarks/bench_runtime.py
	$(BIN)/python benchmarks/bench_import.py

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -prune -exec rm -rf {} +
