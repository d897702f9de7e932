# adaspring_ros — the two commands of a fresh machine are `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test test-fast demo colour-demo colour-task lint bench train gpu-recipe profile clean

setup:  ## venv + ROS 2 wheels + torch (CPU) + dataset + colcon build (idempotent)
	@bash tools/setup.sh

test: setup  ## the whole test suite (unit + real multi-process ROS integration)
	$(PY) -m pytest test -q --durations=15

test-fast: setup  ## the ROS-free unit tests only
	$(PY) -m pytest test -q -m "not ros"

demo: setup  ## the whole pipeline on replayed Fashion-MNIST with a scenario, ~1 minute
	$(PY) -m adaspring_ros.cli demo

colour-demo: setup  ## the same on the shipped colour example (models/colour), ~2.5 minutes
	@bash tools/colour_task.sh models/colour/data test
	$(PY) -m adaspring_ros.cli demo --model colour

colour-task: setup  ## the whole colour task (train/val/test, 12,288 images, ~5 min) under OUT
	@bash tools/colour_task.sh $(or $(OUT),runs/colour-task)

lint: setup
	$(VENV)/bin/ruff check adaspring_ros bench test tools launch

bench: setup  ## all benchmarks (python -m bench); each prints a table and updates docs/benchmarks.md
	$(PY) -m bench

train: setup  ## reproduce models/backbone.pt
	$(PY) -m adaspring_ros.cli train

gpu-recipe:  ## the shipped chain on one GPU at several times its epochs, then its profile, under OUT
	$(PY) -m tools.gpu_recipe $(or $(OUT),runs/gpu-recipe) $(ARGS)

profile: setup  ## reproduce models/profile_table.json
	$(PY) -m adaspring_ros.cli profile

clean:
	rm -rf build log install
