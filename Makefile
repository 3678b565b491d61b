# `make demo`: venv, install, train SPViT_Tiny vs LVViT_Tiny on the bundled digits.
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

DEMO_BACKEND ?= tensorflow
DEMO_ARGS ?= --epochs 20 --seeds 0 1 --out runs/demo

demo: install
	KERAS_BACKEND=$(DEMO_BACKEND) $(BIN)/python examples/digits_demo.py $(DEMO_ARGS)

# Two streams side by side on CI's 2 cores: TensorFlow | JAX then torch.
TEST_STREAMS ?= "tensorflow" "jax torch"

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
