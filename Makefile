# attrboost: the two commands a newcomer needs are `make study` and `make test`.
# Both create ./.venv and install what is missing first (offline-friendly: PyPI only).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
STUDY_ARGS ?=

.PHONY: install study reproduce test test-fast data figures lab bench bench-study clean-cache help readme

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'
	@printf 'STUDY_ARGS\textra options for study, reproduce and figures, e.g. make study STUDY_ARGS=--force\n'
	@printf '\t(all options: $(PY) -m attrboost.study --help)\n'
	@printf 'ATTRBOOST_CACHE\tcache directory (default .cache); clean-cache deletes it\n'
	@printf 'INSTALLER\tuv (default) or pip: what installs .venv, e.g. make test INSTALLER=pip\n'

# INSTALLER=uv (default): uv installs the same packages as pip in less than half the time (docs/performance.md).
# uv does not read pip's configuration, so pip's constraint file and find-links, where set, are passed on; it
# compiles the bytecode at install, as pip does (with PYTHONDONTWRITEBYTECODE set, every process would recompile);
# INSTALLER=pip installs with pip alone (its whole configuration, private indexes included). If uv fails, pip runs.
INSTALLER ?= uv

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
ifeq ($(INSTALLER),uv)
	$(PY) -m pip install -q uv
	c=$$($(PY) -m pip config get global.constraint 2>/dev/null); f=$${PIP_FIND_LINKS:-$$($(PY) -m pip config get global.find-links 2>/dev/null)}; \
	  $(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) $${c:+--constraints "$$c"} $${f:+--find-links "$$f"} -e ".[dev]" \
	  || $(PY) -m pip install -q -e ".[dev]"
else
	$(PY) -m pip install -q -e ".[dev]"
endif
	$(PY) -m ipykernel install --prefix $(VENV) --name python3 >/dev/null
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install attrboost with its dev tools

study: $(STAMP)  ## the main job: the study on the embedded synthetic default, offline (updates the committed papermill_runs/synthetic, figures/synthetic)
	$(PY) -m attrboost.study --publish $(STUDY_ARGS)

reproduce: $(STAMP)  ## re-execute the committed synthetic run set into runs/reproduce/ and compare (a cold run: docs/performance.md)
	$(PY) -m attrboost.study --reproduce $(STUDY_ARGS)

test: $(STAMP)  ## the whole test suite on both cores: unit tests + nbval over the committed notebooks
	$(PY) -m pytest --nbval -n 2 --dist loadfile --no-loadscope-reorder

test-fast: $(STAMP)  ## the tests without the slow ones (notebooks, Ray clusters, the browser), on both cores
	$(PY) -m pytest tests -m "not slow" -n 2

data: $(STAMP)  ## download the real data (needs a network) to data/fashion-product-images-small
	$(PY) -m attrboost.data.download

figures: $(STAMP)  ## regenerate figures/<dataset>/ from the committed runs
	$(PY) -m attrboost.study --figures-only --publish $(STUDY_ARGS)

readme: $(STAMP)  ## regenerate the result tables of docs/results.md and the generated sentences of README.md and docs/ from the committed CSVs
	$(PY) -m attrboost.study.report

lab: $(STAMP)  ## open JupyterLab on the notebooks
	$(VENV)/bin/jupyter lab notebooks/

bench: $(STAMP)  ## every benchmark that runs in minutes on this machine (prints numbers); lists what it skips
	$(PY) benchmarks/bench_extract.py
	$(PY) benchmarks/bench_heads.py
	$(PY) benchmarks/bench_baselines.py
	$(PY) benchmarks/bench_index.py
	$(PY) benchmarks/bench_items.py
	$(PY) benchmarks/bench_serve.py
	$(PY) benchmarks/bench_scale.py
	$(PY) benchmarks/bench_device.py
	@echo "skipped: benchmarks/bench_study.py (a whole cold study, tens of minutes: make bench-study)"
	@echo "skipped: benchmarks/bench_gru.py (Tasks 2/3 with a narrower tag decoder: tens of head fits; the command is in its docstring)"
	@echo "skipped: benchmarks/preprocessing.py (a crop-vs-pad experiment on the validation part, not a benchmark)"
	@echo "skipped: benchmarks/screenshot_serve.py (re-draws figures/serve_synthetic.png, not a benchmark)"

bench-study: $(STAMP)  ## the study benchmark: a fixed configuration, cold, seconds per stage
	$(PY) benchmarks/bench_study.py

clean-cache:  ## delete derived data (features, heads, synthetic images) in ATTRBOOST_CACHE if set, else .cache; rebuilt on demand
	rm -rf -- "$${ATTRBOOST_CACHE:-.cache}"
