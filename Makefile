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

# ruff's verdict, then the whole suite, with the tools of the venv whose bin/ folder is given.
suite = $(1)/ruff format --check . && $(1)/ruff check . && $(1)/python -m pytest

test: $(VENV)/.installed-dev
	$(call suite,$(BIN))

# The whole suite again on the oldest Python and the oldest release of every dependency that
# pyproject.toml allows, in a venv of its own (tests/test_packaging.py checks that FLOOR_PYTHON and
# FLOOR are pyproject's lower bounds). CI runs it after `make test`, so the declared floors stay true.
FLOOR_PYTHON := python3.11
FLOOR := torch==2.12.0 numpy==1.24.2 ninja==1.11.1 \
	tqdm==4.66.0 matplotlib==3.7.0 torchvision==0.27.0 pillow==9.2.0 \
	onnx==1.17.0 onnxruntime==1.18.0 onnxscript==0.7.0 \
	timm==1.0.8 tensorboard==2.14.0 pytest==8.0.0 pytest-xdist==3.5.0 setuptools==70.1.0 \
	hypothesis==6.100.0 ruff==0.13.0
FLOOR_VENV := .venv-floor

$(FLOOR_VENV)/.installed: pyproject.toml Makefile  # Makefile: a new FLOOR reinstalls
	$(FLOOR_PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/python -m pip install --quiet $(FLOOR) -e '.[dev]'
	-$(FLOOR_VENV)/bin/python -m ecanet.ops
	touch $@

test-floor: $(FLOOR_VENV)/.installed
	$(FLOOR_VENV)/bin/python --version && $(FLOOR_VENV)/bin/python -m pip freeze --exclude-editable
	$(call suite,$(FLOOR_VENV)/bin)

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
