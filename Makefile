# Each user-facing target sets up .venv itself when it is missing, so a fresh clone needs nothing else.
# torch is installed first and pinned, before anything that depends on it: an unpinned torch would
# resolve to a multi-GB CUDA build. Override with `make TORCH_SPEC='torch==X' ...` if you need another.
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medfew-installed
PYTEST_ARGS ?=

.PHONY: setup test test-fast app pacs screenshots benchmark clean-venv bench-env

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e '.[app,dev]'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv with medfew and its app/dev extras

test: $(STAMP)  ## the whole test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)  ## unit tests only (no slow integration runs, no browser)
	$(BIN)/python -m pytest -m "not slow and not browser" $(PYTEST_ARGS)

app: $(STAMP)  ## serve the clinician app on http://127.0.0.1:8501 with the default model
	$(BIN)/python -m streamlit run apps/clinician/app.py --server.address 127.0.0.1 --server.port 8501 \
		--server.headless true --browser.gatherUsageStats false

PACS_STORAGE ?= .cache/medfew-pacs
PACS_LOAD ?= $(or $(MEDFEW_DATA_ROOT),../shared/data)/dicom_samples

pacs: $(STAMP)  ## serve a local Orthanc PACS (DICOMweb) on 127.0.0.1 loaded with PACS_LOAD (PACS_LOAD= : empty)
	$(BIN)/python -m medfew.pacs.local_orthanc --storage $(PACS_STORAGE) $(if $(PACS_LOAD),--load $(PACS_LOAD))

screenshots: $(STAMP)  ## re-take docs/screenshots/*.png by running the browser test (needs /usr/bin/chromium)
	MEDFEW_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest tests/test_app_browser.py -q

benchmark: $(STAMP)  ## print sampler throughput (episodes per second)
	$(BIN)/python benchmarks/sampler_speed.py

bench-env:  ## create .venv-bench (torch 2.14.1 + torchvision, medfew, learn2learn, higher, easyfsl)
	PYTHON=$(PYTHON) bash benchmarks/peers/make_env.sh

clean-venv:
	rm -rf $(VENV)
