# Everything a fresh machine needs: `make test` builds .venv, installs the package with its extras, runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch is installed only when the venv has none: a user who already has torch keeps it. On the project's
# machines these pinned wheels lie on the local disk; torchvision is needed by the eval extra (lpips, torch-fidelity).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= dev,eval,train,video,web,onnx
PYTEST_ARGS ?=

.PHONY: install demo demo-models test test-slow lint bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install $(TORCH_SPEC)
	$(PIP) install -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

# The whole system on the bundled demo models, offline: writes demo-output/ (docs/model_zoo.md).
demo: install
	$(VENV)/bin/open-magvit2 demo --output demo-output

# Retrain the demo models from scratch with the project's trainers (about 2 h of training), measure them and
# install them as package data (src/open_magvit2/assets/demo). The build keeps freed CPU memory (docs/design.md
# "CPU memory": the video token set 1.34x, the video generator's step 1.16x); OPEN_MAGVIT2_CPU_MEMORY=default
# turns that off.
OPEN_MAGVIT2_CPU_MEMORY ?= keep
demo-models: install
	OPEN_MAGVIT2_CPU_MEMORY=$(OPEN_MAGVIT2_CPU_MEMORY) $(PY) -m open_magvit2.demo.build --work build/demo-models

test: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: install
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

bench: install
	for f in benchmarks/bench_*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
