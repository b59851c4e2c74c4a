# Two commands set everything up from a bare python3: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Accelerators: `make install EXTRAS=test,eval,cuda13` (or cuda12, tpu) installs jax for them.
EXTRAS ?= test,eval

.PHONY: install demo test test-fast bench fmt fmt-check clean

install: $(STAMP)

# torch is pinned to the CPU build that installs from local disk; a plain
# `torch` would pull a multi-GB CUDA build. It is only used by parity tests.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) tools/demo_method.py --workdir $${DEMO_DIR:-/tmp/distil-jax-demo}

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup tests

fmt: $(STAMP)
	$(VENV)/bin/pyink distil_jax tests tools configs

fmt-check: $(STAMP)
	$(VENV)/bin/pyink --check distil_jax tests tools configs

bench: $(STAMP)
	$(VENV)/bin/distil-jax bench --config configs/sft/tiny.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
