"""Run the whole study: the six notebooks, per backbone, with papermill.

    python -m attrboost.study                                  # synthetic data, 4 backbones -> runs/
    python -m attrboost.study --publish                        # the same, into the committed papermill_runs/, figures/
    python -m attrboost.study --dataset fashion --split by_group
    python -m attrboost.study --dataset csv --csv my.csv --images my/images --attributes colour,shape \
        --n-groups 20 --per-group 10                           # a catalogue of your own
    python -m attrboost.study --figures-only                   # only 05 on the existing runs
    python -m attrboost.study --reproduce                      # re-execute the committed run set into runs/reproduce/
    python -m attrboost.study --refresh-notebooks              # re-execute notebooks/0*.ipynb (01-07) in place

Where the output goes. Ad-hoc runs write under ``runs/`` (git-ignored), which mirrors the tracked
layout: ``runs/papermill_runs/<runset>/`` and ``runs/figures/<runset>/``. The committed run sets
(``papermill_runs/``, ``figures/``) are written only with ``--publish`` (what ``make study`` and
``make figures`` pass) or an explicit ``--out``/``--figures-dir``. ``--reproduce`` re-executes a committed
run set with its own parameters into ``runs/reproduce/`` and reports, per results table, how many rows are
identical, within the committed 95 % CI, or differing (:func:`compare_results`).

Layout (``<runset>`` is ``--runset``, by default ``<dataset>`` for the random split, ``<dataset>-by_group``
otherwise)::

    <out>/<runset>/<backbone>/01_data.ipynb ... 04_evaluate.ipynb   executed copies
    <out>/<runset>/<backbone>/results.csv                           written by 04 (tidy table)
    <out>/<runset>/<backbone>/run.json                              parameters, fingerprint, status, wall times
    <out>/<runset>/results.csv                                      the run set's successful backbones, concatenated
    <out>/<runset>/05_figures.ipynb, run.json, failures.json        figures step, run-set summary, failures
    <out>/<runset>/06_beyond.ipynb, beyond.csv                      baselines, label budget, ablation (one backbone)
    <figures>/<runset>/                                             written by 05 (and beyond_*.png by 06)

Three kinds of job, each run by one step runner (:func:`run_job`): a backbone's notebooks 01..04, the run
set's 05, and 06 for ``--beyond-backbone`` (default efficientnet_lite0) once that backbone has a successful
run in the run set (``--no-beyond`` skips it). A job is skipped ("up to date") when its record in run.json
says ``ok`` with a matching fingerprint and its outputs (e.g. ``results.csv``) exist. The fingerprint covers
the notebook parameters, the *code* of the notebooks (cell types and sources, so re-executing a notebook
in place, which only changes its outputs, does not invalidate runs), the attrboost version, the lib
sources and any local weights file. A failing notebook fails its job only: the other backbones still run,
05 still runs if the run set has at least one successful backbone, and the exit status is 1.

Never lose a result. A run set has run-set parameters (dataset, data_dir, split, n_groups, per_group,
seeds, tasks); its aggregate ``results.csv`` holds every backbone with a successful run under those
parameters, not only the backbones of the current call. A call with other run-set parameters than the
finished runs in the run set is refused before any work, naming the differences; ``--force`` replaces the
run set, ``--runset NAME`` (or another ``--out``) writes a separate one. Every job keeps what it would
replace until it has succeeded: a backbone's run directory is moved aside to ``<backbone>.previous``
(deleted on success; on failure the new attempt goes to ``<backbone>.failed/`` for debugging and the
previous run comes back); 05 and 06 do the same with their notebook, ``beyond.csv`` and the figures
directory (copied aside, as both write into it); a forced replacement does it with the whole run set and
figures directories (kept only when every job succeeded). The notebooks thus run at their final paths,
so the committed notebooks name no temporary directory. A run killed outright leaves ``*.previous``
behind; the next call restores it first. ``*.previous`` and ``*.failed`` are git-ignored.

Every path handed to papermill or to a notebook is relative to the repository root (papermill and
the kernels run there), so executed notebooks that get committed contain no machine-specific paths.

Each backbone's ``run.json`` records the id of the cache it was computed with (``cache_id`` in the cache
directory, ``$ATTRBOOST_CACHE`` or ``.cache``). When runs are skipped as up to date but were computed with
another cache (a fresh clone: the committed results were computed elsewhere), one line says so and how
to re-execute them.

The code, in order (one module per step; this module gathers their public names):
:mod:`~attrboost.study.cli` validates the command line (:func:`parse_args`) into a frozen :class:`StudyConfig`;
:mod:`~attrboost.study.plan` lists the notebook :class:`Step` s (:func:`plan`) and fingerprints their inputs;
:mod:`~attrboost.study.jobs` (:func:`run_study`) checks the run set's parameters (:func:`check_runset`, in
:mod:`~attrboost.study.runsets`) and runs each :class:`Job` (:func:`backbone_job`, :func:`figures_job`,
:func:`beyond_job`) with :func:`run_job` under a :class:`Swap`, executing notebooks through
:mod:`~attrboost.study.execution`; :mod:`~attrboost.study.summary` prints the summary (:func:`report`).
"""
from .plan import (  # noqa: F401
    DEFAULT_BACKBONES, BACKBONE_NOTEBOOKS, FIGURES_NOTEBOOK, BEYOND_NOTEBOOK, NOTEBOOKS, SEARCH_NOTEBOOK,
    COMMITTED_NOTEBOOKS, BEYOND_RESULTS, RESULT_COLUMNS, SORT_COLUMNS, RESULTS, RUN_JSON, FAILURES_JSON,
    KERNEL, EVALUE_CHARS, DEFAULT_OUT, DEFAULT_FIGURES, DEFAULT_JOBS, THREAD_ENV, PUBLISH_OUT,
    PUBLISH_FIGURES, REPRODUCE_OUT, REPRODUCE_FIGURES, RUNSET_KEYS, CSV_KEYS, RUNSET_NAME, PREVIOUS, REPLACED,
    FAILED, CACHE_ID, HEADLINE_METRICS, RUNNER_FILES, COLD_TIME, Execute, StudyConfig, Step, Run, Plan,
    known_backbones, runset_name, rel_to_root, plan_runs, plan_figures, plan_beyond, plan, file_sha256,
    notebook_hash, lib_hash, input_hashes, read_json, runset_keys,
)
from .runsets import (  # noqa: F401
    successful_backbones, aggregate, write_aggregate, runset_parameters, finished_runs, parameter_changes,
    check_runset, side_path, Swap, recover, cache_id, computed_here,
)
from .execution import (  # noqa: F401
    quiet_kernel, BatchKernelManager, papermill_execute, execute_step, failure_info, fmt_seconds, now_utc,
    missing_notebooks, Progress,
)
from .jobs import (  # noqa: F401
    Job, Outcome, run_job, backbone_job, figures_job, beyond_job, run_study, kernel_threads, side_by_side,
    reproduce, findings,
)
from .summary import (  # noqa: F401
    headline, summary_table, report, compare_results, format_comparison,
)
from .cli import (  # noqa: F401
    build_parser, parse_args, unknown_parameters, strip_run_metadata, refresh_notebooks, main,
)

__all__ = [
    'BACKBONE_NOTEBOOKS', 'BEYOND_NOTEBOOK', 'BEYOND_RESULTS', 'BatchKernelManager', 'CACHE_ID', 'COLD_TIME',
    'COMMITTED_NOTEBOOKS', 'CSV_KEYS', 'DEFAULT_BACKBONES', 'DEFAULT_FIGURES', 'DEFAULT_JOBS', 'DEFAULT_OUT',
    'EVALUE_CHARS', 'Execute', 'FAILED', 'FAILURES_JSON', 'FIGURES_NOTEBOOK', 'HEADLINE_METRICS', 'Job',
    'KERNEL', 'NOTEBOOKS', 'Outcome', 'PREVIOUS', 'PUBLISH_FIGURES', 'PUBLISH_OUT', 'Plan', 'Progress',
    'REPLACED', 'REPRODUCE_FIGURES', 'REPRODUCE_OUT', 'RESULTS', 'RESULT_COLUMNS', 'RUNNER_FILES',
    'RUNSET_KEYS', 'RUNSET_NAME', 'RUN_JSON', 'Run', 'SEARCH_NOTEBOOK', 'SORT_COLUMNS', 'Step', 'StudyConfig',
    'Swap', 'THREAD_ENV', 'aggregate', 'backbone_job', 'beyond_job', 'build_parser', 'cache_id',
    'check_runset', 'compare_results', 'computed_here', 'execute_step', 'failure_info', 'figures_job',
    'file_sha256', 'findings', 'finished_runs', 'fmt_seconds', 'format_comparison', 'headline', 'input_hashes',
    'kernel_threads', 'known_backbones', 'lib_hash', 'main', 'missing_notebooks', 'notebook_hash', 'now_utc',
    'papermill_execute', 'parameter_changes', 'parse_args', 'plan', 'plan_beyond', 'plan_figures',
    'plan_runs', 'quiet_kernel', 'read_json', 'recover', 'refresh_notebooks', 'rel_to_root', 'report',
    'reproduce', 'run_job', 'run_study', 'runset_keys', 'runset_name', 'runset_parameters', 'side_by_side',
    'side_path', 'strip_run_metadata', 'successful_backbones', 'summary_table', 'unknown_parameters',
    'write_aggregate',
]
