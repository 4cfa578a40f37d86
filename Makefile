# attrboost: the two commands a newcomer needs are `make study` and `make test`.
# Both create ./.venv and install what is missing first (offline-friendly: PyPI only).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
STUDY_ARGS ?=

.PHONY: install study test data figures lab bench clean-cache help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --prefix $(VENV) --name python3 >/dev/null
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install attrboost with its dev tools

study: $(STAMP)  ## the main job: the study on the embedded synthetic default, offline
	$(PY) -m attrboost.study $(STUDY_ARGS)

test: $(STAMP)  ## the whole test suite: unit tests + nbval over the committed notebooks
	$(PY) -m pytest --nbval

data: $(STAMP)  ## download the real data (needs a network) to data/fashion-product-images-small
	$(PY) -m attrboost.data.download

figures: $(STAMP)  ## regenerate figures/<dataset>/ from the committed runs
	$(PY) -m attrboost.study --figures-only $(STUDY_ARGS)

lab: $(STAMP)  ## open JupyterLab on the notebooks
	$(VENV)/bin/jupyter lab notebooks/

bench: $(STAMP)  ## performance benchmarks (extraction, head training, baselines)
	$(PY) benchmarks/bench_extract.py
	$(PY) benchmarks/bench_heads.py
	$(PY) benchmarks/bench_baselines.py

clean-cache:  ## delete derived data (features, synthetic images); it is rebuilt on demand
	rm -rf .cache
