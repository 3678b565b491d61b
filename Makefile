# `make demo`: venv, install, train SPViT_Tiny vs LVViT_Tiny on the bundled digits.
# `make test`: venv, install with test extras, run the suite once per backend.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BACKENDS ?= tensorflow jax torch
PYTEST_ARGS ?= -m "not slow"

.PHONY: install demo test test-% benchmark clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/activate pyproject.toml requirements-ci.txt
	$(BIN)/pip install --quiet -r requirements-ci.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed

DEMO_BACKEND ?= tensorflow
DEMO_ARGS ?= --epochs 20 --seeds 0 1 --out runs/demo

demo: install
	KERAS_BACKEND=$(DEMO_BACKEND) $(BIN)/python examples/digits_demo.py $(DEMO_ARGS)

# Two streams side by side on CI's 2 cores: TensorFlow | JAX then torch.
TEST_STREAMS ?= "tensorflow" "jax torch"

test: install
	$(BIN)/python tests/run_backends.py $(TEST_STREAMS) -- $(PYTEST_ARGS)

test-%: install
	KERAS_BACKEND=$* $(BIN)/python -m pytest $(PYTEST_ARGS)

benchmark: install
	@for backend in $(BACKENDS); do \
		KERAS_BACKEND=$$backend $(BIN)/python benchmarks/throughput.py --model SPViT_S LVViT_S RefinedViT_S --batch-size 16; \
	done
	KERAS_BACKEND=tensorflow $(BIN)/python benchmarks/input_pipeline.py --recipe spvit --images 512 --batch-size 32

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
