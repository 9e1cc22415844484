# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv on first
# use and reuse it afterwards; a change to pyproject.toml reinstalls.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-floor lint format bench gpu-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The compiled CPU kernels are built once here (cached per machine); without a compiler ecanet
# warns and runs its ATen kernels instead, so a failed build does not stop the install.
$(VENV)/.installed-train: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[train]'
	-$(BIN)/python -m ecanet.ops
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	-$(BIN)/python -m ecanet.ops
	touch $@ $(VENV)/.installed-train

# The compare, then what the attention layers of its first ECA network do on the test images.
demo: $(VENV)/.installed-train
	$(BIN)/ecanet compare --preset demo
	$(BIN)/ecanet explain runs/compare-demo/eca-seed0/best.pt

test: $(VENV)/.installed-dev
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# The whole suite again on the oldest torch and torchvision pyproject.toml allows, in a venv of its
# own (tests/test_packaging.py checks that FLOOR names pyproject's lower bounds). CI runs it after
# `make test`, so the declared floor stays true.
FLOOR := torch==2.12.0 torchvision==0.27.0
FLOOR_VENV := .venv-floor

$(FLOOR_VENV)/.installed: pyproject.toml Makefile  # Makefile: a new FLOOR reinstalls
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/python -m pip install --quiet $(FLOOR) -e '.[dev]'
	-$(FLOOR_VENV)/bin/python -m ecanet.ops
	touch $@

test-floor: $(FLOOR_VENV)/.installed
	$(FLOOR_VENV)/bin/python -c 'import torch, torchvision; print("floor:", torch.__version__, torchvision.__version__)'
	$(FLOOR_VENV)/bin/python -m pytest

# Layer, call and model benchmarks on one thread (15-25 minutes on a 2-core build machine), into a
# folder named after this machine (python -m ecanet.bench.machine: benchmarks/cpu-epyc-avx2, ...), so
# no machine's run overwrites another's; `ecanet bench --quick` is the short run. Then a GPU's host
# time per block, simulated on CPU tensors (the GPU's route, launches skipped; 20 s), beside it.
bench: $(VENV)/.installed-dev
	folder=benchmarks/$$($(BIN)/python -m ecanet.bench.machine) && \
	$(BIN)/ecanet bench --threads 1 --out $$folder && \
	$(BIN)/ecanet bench --threads 1 --groups host --out $$folder-host-route

# On a machine with a CUDA GPU: the Triton kernels compiled for it and the layer and networks on
# CUDA, against float64 references (CI has no GPU; it checks the kernels in Triton's interpreter).
# One process per core compiles the kernels' many specialisations side by side; one thread each
# keeps their float64 CPU references from oversubscribing the cores (48 s on a 16-core H200 host).
gpu-check: $(VENV)/.installed-dev
	OMP_NUM_THREADS=1 ECANET_TRITON_DEVICE=cuda $(BIN)/python -m pytest -n auto \
		tests/ops/triton_kernel_checks.py tests/ops/training_node_checks.py \
		tests/ops/projected_gate_checks.py tests/ops/cuda_checks.py

lint: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(FLOOR_VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .hypothesis
