"""The study wing: the reproduction of the published claim (notebooks 01-07, run sets, reports).

``python -m attrboost.study`` runs the study (:mod:`attrboost.study.runner.cli`). Modules: :mod:`.pipeline` (what
the notebooks call: catalogue -> sample -> features -> heads -> scores), :mod:`.embed` (a sample's frozen
features, pixel PCA included), :mod:`.baselines` and :mod:`.beyond` (notebook 06), :mod:`.report` (tables,
figures, the generated results page), :mod:`.params` (the notebooks' parameters, checked), :mod:`.stats`
(means and paired confidence intervals), and the runner.
"""
