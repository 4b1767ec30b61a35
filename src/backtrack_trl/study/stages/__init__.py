"""The stages of the study, each a :class:`~backtrack_trl.study.stages.base.Stage` (a name, the work, its outputs):
``table1`` (data, init model, SFT, the Table 1 evaluations and baselines), ``rounds`` (the self-improvement rounds
and the control arm) and ``report`` (the final report). :mod:`backtrack_trl.study.runner` runs them in order."""
