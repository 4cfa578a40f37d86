# attrboost: the two commands a newcomer needs are `make study` and `make test`.
# Both create ./.venv and install what is missing first (offline-friendly: PyPI only).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
STUDY_ARGS ?=

.PHONY: install study reproduce test data figures lab bench clean-cache help readme

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'
	@printf 'STUDY_ARGS\textra options for study, reproduce and figures, e.g. make study STUDY_ARGS=--force\n'
	@printf '\t(all options: $(PY) -m attrboost.study --help)\n'
	@printf 'ATTRBOOST_CACHE\tcache directory (default .cache); clean-cache deletes it\n'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --prefix $(VENV) --name python3 >/dev/null
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install attrboost with its dev tools

study: $(STAMP)  ## the main job: the study on the embedded synthetic default, offline (updates the committed papermill_runs/synthetic, figures/synthetic)
	$(PY) -m attrboost.study --publish $(STUDY_ARGS)

reproduce: $(STAMP)  ## re-execute the committed synthetic run set into runs/reproduce/ and compare (about 30-45 min on 2 cores, cold cache)
	$(PY) -m attrboost.study --reproduce $(STUDY_ARGS)

test: $(STAMP)  ## the whole test suite: unit tests + nbval over the committed notebooks
	$(PY) -m pytest --nbval

data: $(STAMP)  ## download the real data (needs a network) to data/fashion-product-images-small
	$(PY) -m attrboost.data.download

figures: $(STAMP)  ## regenerate figures/<dataset>/ from the committed runs
	$(PY) -m attrboost.study --figures-only --publish $(STUDY_ARGS)

readme: $(STAMP)  ## regenerate the README's result tables from the committed CSVs (between the results markers)
	$(PY) -m attrboost.report --readme README.md

lab: $(STAMP)  ## open JupyterLab on the notebooks
	$(VENV)/bin/jupyter lab notebooks/

bench: $(STAMP)  ## performance benchmarks (extraction, head training, baselines, index search + ONNX)
	$(PY) benchmarks/bench_extract.py
	$(PY) benchmarks/bench_heads.py
	$(PY) benchmarks/bench_baselines.py
	$(PY) benchmarks/bench_index.py

clean-cache:  ## delete derived data (features, heads, synthetic images) in ATTRBOOST_CACHE if set, else .cache; rebuilt on demand
	rm -rf -- "$${ATTRBOOST_CACHE:-.cache}"
