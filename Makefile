# pcseg: `make demo` and `make test` each set themselves up (idempotent) in .venv.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip
STAMP := $(VENV)/.pcseg-installed

.PHONY: demo test bench venv clean

$(VPY):
	$(PY) -m venv $(VENV)

# torch is pinned to the CPU wheel first so that no dependency pulls a CUDA build.
$(STAMP): $(VPY) setup.py
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(VPY) -m pytest -n 2 -q tests

demo: $(STAMP)
	$(VPY) tools/demo.py

bench: $(STAMP)
	$(VPY) benchmarks/bench_sparse.py

clean:
	rm -rf $(VENV) work_dirs
