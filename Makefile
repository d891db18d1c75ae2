# One place that knows how to set up, test and run spela-stream.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-fleet lint types unit bench bench-quick bench-continual bench-continual-quick reliability reliability-quick clean

setup: $(STAMP)

# torch==2.13.0 first: a bare torch requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/spela-stream learn

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest

test: lint types unit

# The optional parts installed (.[dev,all]: flwr 1.42 brings typer<0.21, click<9, rich 14): the
# fleet's tests on real Flower processes, the MQTT tests and the CLI's, in a venv of their own,
# so the CLI is checked under the typer the extra brings too; mypy against flwr's own types.
# SPELA_REQUIRE_FLWR=1: a missing flwr fails the fleet tests instead of skipping them.
FLEET_VENV  := .venv-fleet
FLEET_BIN   := $(FLEET_VENV)/bin
FLEET_STAMP := $(FLEET_VENV)/.installed

$(FLEET_STAMP): pyproject.toml
	test -x $(FLEET_BIN)/python || $(PYTHON) -m venv $(FLEET_VENV)
	$(FLEET_BIN)/python -m pip install --quiet --upgrade pip
	$(FLEET_BIN)/python -m pip install --quiet torch==2.13.0
	$(FLEET_BIN)/python -m pip install --quiet -e '.[dev,all]'
	touch $(FLEET_STAMP)

test-fleet: $(FLEET_STAMP)
	$(FLEET_BIN)/python -c "from importlib.metadata import version as v; print('flwr', v('flwr'), 'typer', v('typer'))"
	$(FLEET_BIN)/mypy
	SPELA_REQUIRE_FLWR=1 $(FLEET_BIN)/pytest tests/test_flower.py tests/test_fleet.py \
		tests/test_mqtt.py tests/test_cli.py tests/test_cli_ux.py tests/test_serve_cli.py \
		spela_stream/flower.py spela_stream/fleet.py spela_stream/fleet_wire.py

# The suite against backprop, deep-river, River, Vowpal Wabbit and MOA (peers installed on demand,
# deep-river in .bench-venvs/); results in benchmarks/results/ and README.md's results block.
# Two jobs at a time: one single-threaded learner per core of a 2-core machine.
bench: setup
	$(BIN)/python -m benchmarks.suite --jobs 2

bench-quick: setup
	$(BIN)/python -m benchmarks.suite --quick

# The continual benchmark (issue 11): class-incremental MNIST/Optdigits/Letter/camera features and
# River's drift generators; benchmarks/results/continual.md/.json, PNG curves, README.md's block.
# Parts: make bench-continual STREAMS=drift (or mnist-2,rbf,...).
STREAMS ?= all
bench-continual: setup
	nice -n 10 $(BIN)/python -m benchmarks.continual --streams $(STREAMS) --jobs 2

# The same with drift streams of 10,000 samples (recurring: 8 blocks of 1,000).
bench-continual-quick: setup
	nice -n 10 $(BIN)/python -m benchmarks.continual --streams $(STREAMS) --jobs 2 --drift-n 10000

# Fault trials against the real command (kill -9, damaged files, full disk, read-only media,
# socket abuse, soak, fuzz), written up as docs/reliability.md. Root for the mounts.
reliability: setup
	nice -n 10 $(BIN)/python -m benchmarks.reliability

reliability-quick: setup
	nice -n 10 $(BIN)/python -m benchmarks.reliability --quick

clean:
	rm -rf $(VENV) $(FLEET_VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
