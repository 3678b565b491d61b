# `make demo`: venv, install, a small study: SPViT_Tiny vs LVViT_Tiny (no priors), Fashion-MNIST
# (the bundled digits when it cannot be installed), 2 sizes x 2 seeds.
# `make test`: venv, install with test extras, run the suite once per backend.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BACKENDS ?= tensorflow jax torch
PYTEST_ARGS ?= -m "not slow"

.PHONY: install datasets demo test test-% benchmark model-table lint-imports clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/activate pyproject.toml requirements-ci.txt
	$(BIN)/pip install --quiet -r requirements-ci.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# Fashion-MNIST offline (tests that need it skip, saying why, when it is absent):
# the Debian/Ubuntu package, installed when apt-get is there and we are root.
FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist
datasets:
	@if [ -d $(FASHION_MNIST_DIR) ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
		|| echo "make datasets: could not install dataset-fashion-mnist; its tests will skip"; \
	else echo "make datasets: no apt-get as root; Fashion-MNIST tests will skip"; fi

# PyTorch: the fastest backend for these tiny models on a CPU (one core per cell: training
# steps 1.1-1.5x as fast as JAX's, no compile per cell; docs/study.md "Which backend").
# Cells run 2 at a time, each on one core.
DEMO_BACKEND ?= torch
DEMO_OUT ?= runs/demo
DEMO_ARGS ?= --models SPViT_Tiny LVViT_Tiny --sizes 100 1000 --seeds 0 1 --epochs 10 \
	--min-steps 150 --jobs 2

demo: install datasets
	@data=$$(KERAS_SPVIT_LAZY_IMPORT=1 $(BIN)/python -c "from keras_spvit.data.idx import \
	fashion_mnist_available as found; print('fashion_mnist' if found() else 'digits')"); \
	if [ "$$data" = digits ]; then echo "make demo: Fashion-MNIST is not installed \
	(apt-get install dataset-fashion-mnist, or KERAS_SPVIT_FASHION_MNIST=DIR): the study \
	runs on the bundled digits instead."; fi; \
	echo "KERAS_BACKEND=$(DEMO_BACKEND) keras-spvit study --data $$data $(DEMO_ARGS) --out $(DEMO_OUT)/$$data"; \
	KERAS_BACKEND=$(DEMO_BACKEND) $(BIN)/keras-spvit study --data $$data $(DEMO_ARGS) \
		--out $(DEMO_OUT)/$$data

# Two streams side by side on CI's 2 cores, balanced by measured time (2026-12-01:
# TensorFlow ~38 min, JAX ~36, torch ~10; JAX's tests/cli ~3):
# TensorFlow then JAX's CLI tests | the rest of JAX then torch.
TEST_STREAMS ?= "tensorflow jax:tests/cli" "jax:!tests/cli torch"

test: install datasets
	$(BIN)/python tests/run_backends.py $(TEST_STREAMS) -- $(PYTEST_ARGS)

test-%: install datasets
	KERAS_BACKEND=$* $(BIN)/python -m pytest $(PYTEST_ARGS)

# The README's model table, from the family table (keras_spvit/zoo/families.py).
model-table: install
	KERAS_BACKEND=tensorflow $(BIN)/python tools/model_table.py

# The import-direction contracts of pyproject.toml.
lint-imports: install
	$(BIN)/lint-imports

benchmark: install
	@for backend in $(BACKENDS); do \
		KERAS_BACKEND=$$backend $(BIN)/python benchmarks/throughput.py --model SPViT_S LVViT_S RefinedViT_S --batch-size 16; \
	done
	KERAS_BACKEND=tensorflow $(BIN)/python benchmarks/input_pipeline.py --recipe spvit --images 512 --batch-size 32

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
