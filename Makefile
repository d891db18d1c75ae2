# One place that knows how to set up, test and run spela-stream.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-fleet lint types unit bench bench-quick bench-continual clean

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

# The optional parts installed (.[dev,all]: flwr brings typer<0.21, click<9, rich 14): the fleet's
# and the MQTT tests, and the CLI's, in a venv of their own, so the CLI is checked under them.
FLEET_VENV := .venv-fleet
FLEET_STAMP := $(FLEET_VENV)/.installed

$(FLEET_STAMP): pyproject.toml
	test -x $(FLEET_VENV)/bin/python || $(PYTHON) -m venv $(FLEET_VENV)
	$(FLEET_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(FLEET_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(FLEET_VENV)/bin/python -m pip install --quiet -e '.[dev,all]'
	touch $(FLEET_STAMP)

test-fleet: $(FLEET_STAMP)
	$(FLEET_VENV)/bin/python -c "from importlib.metadata import version as v; print('flwr', v('flwr'), 'typer', v('typer'))"
	$(FLEET_VENV)/bin/pytest tests/test_fleet.py tests/test_mqtt.py tests/test_cli.py tests/test_serve_cli.py spela_stream/fleet.py

# The suite against backprop, deep-river, River, Vowpal Wabbit and MOA (peers installed on demand,
# deep-river in .bench-venvs/); results in benchmarks/results/ and README.md's results block.
# Two jobs at a time: one single-threaded learner per core of a 2-core machine.
bench: setup
	$(BIN)/python -m benchmarks.suite --jobs 2

bench-quick: setup
	$(BIN)/python -m benchmarks.suite --quick

# Class-incremental MNIST (2 and 1 classes per stage): spela with and without its memory.
bench-continual: setup
	nice -n 10 $(BIN)/python -m benchmarks.continual --learners "spela;spela-m0;backprop;backprop-replay;slda;river-softmax;no-change" --per-stage 2
	nice -n 10 $(BIN)/python -m benchmarks.continual --learners "spela;spela-m0" --per-stage 1

clean:
	rm -rf $(VENV) $(FLEET_VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
