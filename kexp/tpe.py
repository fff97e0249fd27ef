"""`search.method: tpe`: Optuna's TPE sampler through its ask-and-tell interface (an optional extra,
`pip install "kexp[optuna]"`). Optuna only proposes points and hears their scores; kexp's own sweep
loop trains them, through its executor, scored on the same objective (the K-fold mean) as any sweep.

A key with a list of choices (structures included) or a stepped range is a categorical over its values'
positions (so any YAML value can be a choice); a continuous range is Optuna's int or float
distribution, log-scaled with `log: true`. The sampler is seeded with the sweep's sampling seed, so a
sweep asks the same points run after run; a resumed sweep tells the sampler every trial it finished
first, then goes on (its later points may differ from an uninterrupted run's)."""

from __future__ import annotations

from typing import Any

from kexp.errors import UsageError


class Asker:
    """One Optuna study in memory: `ask()` a point, `tell()` its score (None: the trial failed)."""

    def __init__(self, dimensions, seed: int, mode: str, batch: int):
        try:
            import optuna
        except ImportError:  # kexp.search reports it before a sweep starts; this is for direct callers
            raise UsageError('method: tpe needs Optuna: pip install "kexp[optuna]"') from None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.dimensions = list(dimensions)
        self.distributions = {d.key: _distribution(optuna, d) for d in self.dimensions}
        sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=batch > 1)
        self.study = optuna.create_study(direction="maximize" if mode == "max" else "minimize", sampler=sampler)

    def ask(self) -> tuple[Any, dict]:
        trial = self.study.ask(self.distributions)
        return trial, self._point(trial.params)

    def tell(self, trial, value: float | None) -> None:
        if value is None:
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, value)

    def add(self, point: dict, value: float | None) -> None:
        """A trial finished before (a resumed sweep): into the study as if it had been asked."""
        state = self.optuna.trial.TrialState
        params = {d.key: _param(d, point[d.key]) for d in self.dimensions}
        if any(v is None for v in params.values()):
            return  # a value the space no longer holds
        self.study.add_trial(self.optuna.trial.create_trial(
            params=params, distributions=self.distributions, value=value,
            state=state.COMPLETE if value is not None else state.FAIL))

    def _point(self, params: dict) -> dict:
        return {d.key: d.values[params[d.key]] if d.values is not None else params[d.key] for d in self.dimensions}


def _distribution(optuna, dimension):
    if dimension.values is not None:
        return optuna.distributions.CategoricalDistribution(list(range(len(dimension.values))))
    if dimension.integer:
        return optuna.distributions.IntDistribution(dimension.low, dimension.high, log=dimension.log)
    return optuna.distributions.FloatDistribution(dimension.low, dimension.high, log=dimension.log)


def _param(dimension, value):
    """A point's value as the study's parameter (the position of a choice); None when not in the space."""
    if dimension.values is None:
        return value
    for index, choice in enumerate(dimension.values):
        if choice == value and type(choice) is type(value):
            return index
    return None
