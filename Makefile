# pcseg: `make demo` and `make test` each set themselves up (idempotent) in .venv.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip
STAMP := $(VENV)/.pcseg-installed
SYSDEPS_STAMP := $(VENV)/.pcseg-sysdeps
KERNELS_STAMP := $(VENV)/.pcseg-kernels
# Debian libraries of Open3D's headless (software Vulkan) renderer; without them pcseg.vis falls
# back to matplotlib and says so.
APT_PACKAGES := libusb-1.0-0 libvulkan1 mesa-vulkan-drivers libegl1 libgl1
PEERS_PY ?= /work/peers/.venv/bin/python

.PHONY: demo test test-slow bench venv sysdeps clean

$(VPY):
	$(PY) -m venv $(VENV)

# torch is pinned to the CPU wheel first so that no dependency pulls a CUDA build.
$(STAMP): $(VPY) setup.py
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[test]"
	touch $(STAMP)

# The compiled CPU sparse kernels (about a minute, once per machine and source; without a compiler
# pcseg uses its pure-torch path and says so here).
$(KERNELS_STAMP): $(STAMP) pcseg/sparse/kernels/cpu/sparse_cpu.cpp pcseg/sparse/kernels/cpu.py
	$(VPY) -c "from pcseg.sparse.kernels import cpu; print('CPU sparse kernels:', 'built' if cpu.available() else 'not built (' + str(cpu.unavailable_reason()) + '); using the pure-torch path')"
	touch $(KERNELS_STAMP)

$(SYSDEPS_STAMP): $(VPY)
	@if dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null) \
		|| echo "warning: could not install $(APT_PACKAGES); renders will use matplotlib"; \
	else echo "note: install $(APT_PACKAGES) for Open3D's offscreen renderer; using matplotlib until then"; fi
	touch $(SYSDEPS_STAMP)

venv: $(STAMP) $(KERNELS_STAMP) $(SYSDEPS_STAMP)

test: venv
	OMP_NUM_THREADS=1 $(VPY) -m pytest -n 2 -q tests

test-slow: venv
	$(VPY) -m pytest -q -m slow tests

demo: venv
	$(VPY) tools/demo.py

# Peers (spconv, MinkowskiEngine) live in their own venv (benchmarks/peers.md); pcseg is pure
# Python on the same torch, so the benchmark runs there when it exists.
# Each engine runs in its own process at BENCH_THREADS threads (spconv at 1 only); see benchmarks/bench_sparse.py.
BENCH_THREADS ?= 1
bench: venv
	@if [ -x $(PEERS_PY) ]; then PYTHONPATH=$(CURDIR) $(PEERS_PY) benchmarks/bench_sparse.py --threads $(BENCH_THREADS); \
	else $(VPY) benchmarks/bench_sparse.py --threads $(BENCH_THREADS); fi

clean:
	rm -rf $(VENV) work_dirs
