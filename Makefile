# Set-up and everyday commands. `make demo` and `make test` work on a fresh machine:
# the first run creates .venv and installs everything (≈ 8 min, most of it compiling llama.cpp).
VENV ?= .venv
PY := $(VENV)/bin/python
# llama.cpp's native build enables AMX on CPUs that advertise it but cannot run it (SIGILL in
# ggml_backend_amx_mul_mat); build for the AVX2/FMA baseline instead.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

.PHONY: install demo test bench lint ha-venv ha-e2e llamafactory-venv llamafactory-e2e

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch would pull the multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -q -e ".[all,qlora,dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) examples/edge_demo.py

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) -m pytest benchmarks --benchmark-only -q

lint: install
	$(VENV)/bin/ruff check intentkit trainers tests benchmarks examples
	$(VENV)/bin/mypy

# A real Home Assistant for the end-to-end test, in its own venv: 2025.4.4 is the newest release
# that runs on Python 3.13.0 (current ones need 3.14). Its integrations' pinned requirements are
# installed up front (read from its manifests), so that it starts with --skip-pip.
HA_PYTHON ?= $(HOME)/.pyenv/versions/3.13.0/bin/python3
HA_VENV ?= .ha-venv
HA_VERSION ?= 2025.4.4

$(HA_VENV)/.installed: tests/e2e/ha_requirements.py
	$(HA_PYTHON) -m venv $(HA_VENV)
	$(HA_VENV)/bin/python -m pip install -q --upgrade pip
	$(HA_VENV)/bin/python -m pip install -q homeassistant==$(HA_VERSION)
	$(HA_VENV)/bin/python tests/e2e/ha_requirements.py > $(HA_VENV)/requirements.txt
	$(HA_VENV)/bin/python -m pip install -q -r $(HA_VENV)/requirements.txt
	touch $@

ha-venv: $(HA_VENV)/.installed

ha-e2e: install ha-venv
	INTENTKIT_REQUIRE_HA=1 $(PY) -m pytest -q -p no:cacheprovider -m ha_e2e tests/e2e

# LLaMA-Factory, the engine for training beyond one machine, in its own venv: it pins transformers,
# peft and accelerate older than intentkit's. The CPU torch wheel first, as for .venv. PyPI's
# torchvision and torchaudio are built for CUDA torch and an older torch (torchaudio stops at 2.11)
# and their compiled parts fail to load beside the CPU torch 2.13; LLaMA-Factory imports
# torchaudio at start-up but needs neither for text: torchvision is removed, torchaudio is kept
# without its compiled extension (it then imports as "extension not available").
LF_VENV ?= .lf-venv
LF_VERSION ?= 0.9.5

$(LF_VENV)/.installed: Makefile
	python3 -m venv $(LF_VENV)
	$(LF_VENV)/bin/python -m pip install -q --upgrade pip
	$(LF_VENV)/bin/python -m pip install -q torch==2.13.0 llamafactory==$(LF_VERSION)
	$(LF_VENV)/bin/python -m pip uninstall -q -y torchvision
	rm -f $(LF_VENV)/lib/python3*/site-packages/torchaudio/lib/*.so
	$(LF_VENV)/bin/python -c "import llamafactory.train.tuner"
	touch $@

llamafactory-venv: $(LF_VENV)/.installed

llamafactory-e2e: install llamafactory-venv
	INTENTKIT_REQUIRE_LLAMAFACTORY=1 $(PY) -m pytest -q -p no:cacheprovider -m llamafactory_e2e tests/e2e/test_llamafactory.py
