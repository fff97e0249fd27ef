"""`kexp export`: run folders and sweep folders into TensorBoard and MLflow, the places people already
look at runs. Quiet library code: returns what it wrote, raises kexp.errors types.

What is exported (both targets), read through kexp.runs and kexp.layout like `kexp compare`:
- params: the run's config flattened to dotted keys (`training.epochs`), as `compare` shows them;
- per-epoch metrics, step = epoch: hold-out history.csv; K-fold each fold's history
  (folds/<id>/history.csv, as `folds/<id>/<column>`) and the mean curves over folds; the retrained
  model's final_history.csv (as `final/<column>`);
- final metrics, as `kexp compare --format json` names them (`val_best`, `val_best_std`, `val_last`,
  `test`, `baseline`, `margin`, `epochs`, `best_epoch`, `duration`, ...), and every test metric as
  `test_<name>`;
- a sweep folder: its trials (each a run), under the sweep.

TensorBoard (`to_tensorboard`): event files written with TensorBoard's own protos and record writer
(no TensorFlow; values as float32, as tf.summary.scalar writes them and TensorBoard's fast loader
reads them): OUT/<run>/ (a trial: OUT/<sweep>/<run>/), with the mean curves or the hold-out
history there, each fold in folds/<id>/, the retrained model in final/; the hyperparameters go to the
HParams view (one session per run, its final metrics as `summary/<name>` scalars). Exporting again
rewrites the run's folder (one folder per run id).

MLflow (`to_mlflow`): through MLflow's client, into the tracking URI given, else MLflow's own default
($MLFLOW_TRACKING_URI, else ./mlflow.db with artifacts in ./mlruns); each run a run tagged
`kexp.run_id` (its folder's name), a sweep a parent run with its trials as nested children; the
model file, plots, config and metrics.json as artifacts. Exporting again finds the run by that tag
and adds what is missing; a run whose logged values no longer match the folder (a K-fold run resumed
since) is replaced.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kexp import layout, runs
from kexp.errors import KexpError, RunError, UsageError
from kexp.report.rows import RunRow, make_row, run_label, scores

SUMMARY_COLUMNS = ("epochs", "best_epoch", "val_best", "val_last", "test", "chance", "baseline", "margin",
                   "duration")  # compare's numeric columns: the final metrics of a run
RUN_ID_TAG = "kexp.run_id"
EXTRAS = {"tensorboard": 'pip install "kexp[tensorboard]"', "mlflow": 'pip install "kexp[mlflow]"'}


@dataclass(frozen=True)
class Exported:
    """One run or sweep exported: where it went, and what was done there."""

    source: Path  # the run or sweep folder
    kind: str  # "run", "trial" or "sweep"
    target: str  # the TensorBoard folder, or the MLflow run id
    action: str  # TensorBoard: "written" or "rewritten"; MLflow: "created", "updated" or "replaced"


@dataclass
class Export:
    """What an export did: where to, every run and sweep exported, and one warning per folder read
    only in part."""

    where: str  # the TensorBoard folder, or the MLflow tracking URI
    experiment: str | None = None  # MLflow: the experiment's name
    items: list[Exported] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- reading what to export
@dataclass
class _Run:
    path: Path
    row: RunRow
    sweep: Path | None

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.row.config or {})

    @property
    def status(self) -> str:
        return self.row.fields["status"]

    @property
    def started(self) -> float:
        return _seconds((self.row.record.status_data or {}).get("started"))

    @property
    def ended(self) -> float | None:
        status = self.row.record.status_data or {}
        ended = status.get("ended") or status.get("updated")
        return _seconds(ended) if isinstance(ended, str) else None


def _seconds(text: Any) -> float:
    """A status.json time as seconds since the epoch (0 when missing or unreadable)."""
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
    except (TypeError, ValueError):
        return 0.0


def _plan(paths: list[str | Path], warnings: list[str]) -> list[tuple[Path | None, list[_Run]]]:
    """The runs under `paths` grouped by the sweep they are trials of (None: no sweep), in order."""
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.exists():
            raise RunError(f"{path}: no such run or sweep folder")
    groups: dict[Path | None, list[_Run]] = {}
    for path in paths:
        if runs.is_sweep_folder(path):
            groups.setdefault(path.resolve(), [])
    for path in runs.find_runs(paths):
        record = runs.readable_run(path, warnings, "exported")
        if record is None:
            continue
        sweep = runs.sweep_of(path.resolve())
        groups.setdefault(sweep, []).append(_Run(path=path.resolve(), row=make_row(record), sweep=sweep))
    if not groups:
        shown = ", ".join(str(p) for p in paths)
        raise RunError(f"{shown}: no kexp run folders found (a run folder holds status.json and config.yaml)")
    return list(groups.items())


def final_metrics(row: RunRow) -> dict[str, float]:
    """A run's final metrics under `kexp compare --format json`'s names, and `test_<name>` for each test
    metric; numbers only (a missing or non-finite value is left out)."""
    out: dict[str, float] = {}
    for column in SUMMARY_COLUMNS:
        value, std = row.value(column)
        if _finite(value):
            out[column] = float(value)
        if _finite(std):
            out[f"{column}_std"] = float(std)
    for name, value in scores(row.metrics, "test").items():
        if _finite(value):
            out[f"test_{name}"] = float(value)
    return out


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def series(run: _Run) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Per-epoch values: group -> column -> [(epoch, value)], NaN (an empty cell) left out. Groups: ""
    (hold-out history, or the K-fold mean curves), "folds/<id>" per fold, "final" (the retrained model)."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    curves = run.row.metrics.curves
    if isinstance(curves, dict):
        out[""] = {name: [(i, v) for i, v in enumerate(values, start=1) if _finite(v)]
                   for name, values in curves.items() if isinstance(values, list)}
    history = _history(run.path / layout.HISTORY)
    if history:
        out[""] = history
    folds = run.path / layout.FOLDS_DIR
    if folds.is_dir():
        for fold in sorted(p for p in folds.iterdir() if (p / layout.HISTORY).is_file()):
            out[f"{layout.FOLDS_DIR}/{fold.name}"] = _history(fold / layout.HISTORY)
    final = _history(run.path / layout.FINAL_HISTORY)
    if final:
        out[layout.FINAL_DIR] = final
    return {group: columns for group, columns in out.items() if any(columns.values())}


def _history(path: Path) -> dict[str, list[tuple[int, float]]]:
    try:
        columns = runs.read_history(path) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    epochs = columns.pop("epoch", None)
    steps = [int(e) if _finite(e) else i for i, e in enumerate(epochs, start=1)] if epochs else None
    return {name: [(steps[i] if steps else i + 1, v) for i, v in enumerate(values) if _finite(v)]
            for name, values in columns.items()}


def _need(package: str) -> None:
    """UsageError naming the extra when an optional package is missing."""
    import importlib.util

    if importlib.util.find_spec(package) is None:
        raise UsageError(f"kexp export --to {package} needs the {package} package: {EXTRAS[package]}")


# --------------------------------------------------------------------------- TensorBoard
def to_tensorboard(paths: list[str | Path], out_dir: str | Path) -> Export:
    """Write the runs and sweeps under `paths` as TensorBoard event files under `out_dir` (see the
    module docstring); a run exported before is rewritten. UsageError when the tensorboard package
    is missing or `out_dir` would overwrite a kexp run folder; RunError when no run is found."""
    _need("tensorboard")
    out_dir = Path(out_dir)
    result = Export(where=str(out_dir))
    for sweep, members in _plan(paths, result.warnings):
        parent = out_dir / sweep.name if sweep is not None else out_dir
        for run in members:
            target = parent / run.id
            _refuse_run_folder(out_dir, target)
            action = "rewritten" if target.exists() else "written"
            _replace_folder(target, lambda folder, run=run: _write_run_events(folder, run))
            result.items.append(Exported(run.path, "trial" if sweep is not None else "run", str(target), action))
    return result


def _refuse_run_folder(out_dir: Path, target: Path) -> None:
    for folder in (target, target.parent):
        if runs.is_run_folder(folder) or runs.is_sweep_folder(folder):
            raise UsageError(f"--dir {out_dir}: {folder} is a kexp run or sweep folder, which an export must not "
                             "overwrite; export into a folder of its own (e.g. --dir tensorboard)")


def _replace_folder(target: Path, write) -> None:
    """Write a folder through `write(folder)` into a temporary sibling, then put it in place of `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(fresh)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(fresh, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(fresh, target)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise


def _write_run_events(folder: Path, run: _Run) -> None:
    from tensorboard.plugins.hparams import summary_v2 as hparams_summary

    start = run.started
    by_group = series(run)
    hparams = {key: value for key, value in run.params.items()  # a null is no value: left out
               if isinstance(value, str) or _finite(value) or isinstance(value, bool)}
    head = [hparams_summary.hparams_pb(hparams, trial_id=run.id, start_time_secs=start)]
    summary = {f"summary/{name}": [(0, value)] for name, value in final_metrics(run.row).items()}
    _events(folder, start, {**by_group.pop("", {}), **summary}, head)
    for group, columns in by_group.items():
        _events(folder / group, start, columns)


def _events(folder: Path, wall_time: float, scalars: dict[str, list[tuple[int, float]]], head=()) -> None:
    """One event file in `folder`: the summaries in `head` (step 0), then each scalar's points as
    tf.summary.scalar writes them: float32 tensors with the scalars plugin's metadata (TensorBoard's
    fast loader drops float64 scalars)."""
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorboard.plugins.scalar import metadata as scalar_metadata
    from tensorboard.summary.writer.record_writer import RecordWriter

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"events.out.tfevents.{int(wall_time):010d}.kexp"
    with open(path, "wb") as file:
        writer = RecordWriter(file)
        writer.write(event_pb2.Event(wall_time=wall_time, file_version="brain.Event:2").SerializeToString())
        for summary in head:
            writer.write(event_pb2.Event(wall_time=wall_time, step=0, summary=summary).SerializeToString())
        for tag, points in scalars.items():
            meta = scalar_metadata.create_summary_metadata(display_name=tag, description="")
            for index, (step, value) in enumerate(points):
                tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[value],
                                                tensor_shape=tensor_shape_pb2.TensorShapeProto())
                item = summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=meta if index == 0 else None)
                writer.write(event_pb2.Event(wall_time=wall_time, step=step,
                                             summary=summary_pb2.Summary(value=[item])).SerializeToString())
        file.flush()


# --------------------------------------------------------------------------- MLflow
_STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED", "incomplete": "KILLED"}
_RUN_ARTIFACTS = ((layout.MODEL, ""), (layout.CONFIG_YAML, ""), (layout.METRICS, ""), (layout.PLOTS_DIR, "plots"))
_SWEEP_ARTIFACTS = ((layout.SWEEP_JSON, ""), (layout.SWEEP_CONFIG, ""), (layout.BEST_CONFIG, ""),
                    (layout.PLOTS_DIR, "plots"))


def to_mlflow(paths: list[str | Path], tracking_uri: str | None = None, experiment: str = "kexp") -> Export:
    """Log the runs and sweeps under `paths` to MLflow (see the module docstring) into `experiment`
    (created when missing); a run exported before (tag kexp.run_id) is updated, never logged twice.
    UsageError when mlflow is missing; KexpError when the tracking store fails."""
    _need("mlflow")
    try:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException
    except ImportError as exc:  # installed but broken
        raise UsageError(f"kexp export --to mlflow: mlflow cannot be imported ({exc}); {EXTRAS['mlflow']}") from None
    warnings: list[str] = []
    plan = _plan(paths, warnings)
    try:
        client = MlflowClient(tracking_uri)
        uri = str(client.tracking_uri)
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
        result = Export(where=uri, experiment=experiment, warnings=warnings)
        for sweep, members in plan:
            parent = None
            if sweep is not None:
                parent, action = _log_sweep(client, experiment_id, sweep)
                result.items.append(Exported(sweep, "sweep", parent, action))
            for run in members:
                run_id, action = _log_run(client, experiment_id, run, parent)
                result.items.append(Exported(run.path, "trial" if parent else "run", run_id, action))
    except MlflowException as exc:
        raise KexpError(f"MLflow ({tracking_uri or 'default tracking URI'}): {exc.message}") from None
    except OSError as exc:
        raise KexpError(f"MLflow ({tracking_uri or 'default tracking URI'}): {exc}") from None
    except ImportError as exc:  # a store's own package (SQLAlchemy for sqlite:) is missing
        raise UsageError(f"kexp export --to mlflow: {exc}; {EXTRAS['mlflow']}") from None
    return result


def _text(value: Any) -> str:
    """A param's value as MLflow keeps it: text as is, anything else as JSON (true, null, 0.01, [16, 32])."""
    return value if isinstance(value, str) else json.dumps(value)


def _log_run(client, experiment_id: str, run: _Run, parent: str | None) -> tuple[str, str]:
    metrics = {f"{group}/{name}" if group else name: points
               for group, columns in series(run).items() for name, points in columns.items()}
    metrics.update({name: [(0, value)] for name, value in final_metrics(run.row).items()})
    fields = run.row.fields
    tags = {"kexp.kind": "trial" if parent else "run", "kexp.path": str(run.path), "kexp.status": run.status,
            "kexp.command": fields.get("command"), "kexp.dataset": fields.get("dataset"),
            "kexp.scheme": fields.get("scheme")}
    if parent:
        tags["mlflow.parentRunId"] = parent
        tags["kexp.sweep"] = run.sweep.name
    return _upsert(client, experiment_id, run.id, name=run_label(run.id),
                   params={k: _text(v) for k, v in run.params.items()}, metrics=metrics, tags=tags,
                   status=run.status, start=run.started, end=run.ended,
                   artifacts=[(run.path / name, to) for name, to in _RUN_ARTIFACTS])


def _log_sweep(client, experiment_id: str, folder: Path) -> tuple[str, str]:
    sweep = layout.read_sweep(folder) or layout.Sweep()
    record = runs.read_run(folder)  # status.json as a run's
    params: dict[str, str] = {}
    if sweep.method is not None:
        params["search.method"] = _text(sweep.method)
    for key, spec in (sweep.space or {}).items():
        params[f"search.space.{key}"] = _text(spec)
    if isinstance(sweep.objective, layout.Objective):
        params.update({f"search.objective.{k}": _text(v) for k, v in sweep.objective.to_dict().items()})
    if sweep.seeds is not None:
        params["search.seeds"] = _text(sweep.seeds)
    metrics = {}
    best = sweep.best if isinstance(sweep.best, layout.SweepBest) else None
    for name, value in (("best_objective", best and best.objective),
                        ("best_objective_std", best and best.objective_std),
                        ("trials_completed", sum(t.status == "completed" for t in sweep.trial_list()))):
        if _finite(value):
            metrics[name] = [(0, float(value))]
    status_data = record.status_data or {}
    tags = {"kexp.kind": "sweep", "kexp.path": str(folder), "kexp.status": record.status,
            "kexp.best_trial": best.trial if best else None}
    ended = status_data.get("ended") or status_data.get("updated")
    return _upsert(client, experiment_id, folder.name, name=run_label(folder.name), params=params,
                   metrics=metrics, tags=tags, status=record.status, start=_seconds(status_data.get("started")),
                   end=_seconds(ended) if isinstance(ended, str) else None,
                   artifacts=[(folder / name, to) for name, to in _SWEEP_ARTIFACTS])


def _upsert(client, experiment_id: str, key: str, *, name: str, params: dict[str, str],
            metrics: dict[str, list[tuple[int, float]]], tags: dict[str, Any], status: str, start: float,
            end: float | None, artifacts: list[tuple[Path, str]]) -> tuple[str, str]:
    """The MLflow run tagged kexp.run_id=`key`, created or brought up to date: (its id, the action)."""
    from mlflow.entities import Metric, Param, RunTag

    if "'" in key or "\\" in key:
        raise UsageError(f"{key}: a run folder name for MLflow cannot hold quotes or backslashes")
    found = client.search_runs([experiment_id], f"tags.`{RUN_ID_TAG}` = '{key}'", max_results=2)
    run, action, logged = (found[0] if found else None), "created", {}
    if run is not None:
        logged = {name: {m.step: m.value for m in client.get_metric_history(run.info.run_id, name)}
                  for name in run.data.metrics}
        if _matches(run.data.params, logged, params, metrics):
            action = "updated"
        else:  # MLflow cannot change a logged param or value: start the run over
            client.delete_run(run.info.run_id)
            run, action, logged = None, "replaced", {}
    stamp = int(start * 1000)
    if run is None:
        run = client.create_run(experiment_id, start_time=stamp or None, run_name=name,
                                tags={RUN_ID_TAG: key})
    run_id = run.info.run_id
    new_params = [Param(k, v) for k, v in params.items() if k not in run.data.params]
    new_metrics = [Metric(k, v, stamp, step) for k, points in metrics.items() for step, v in points
                   if step not in logged.get(k, {})]
    new_tags = [RunTag(k, str(v)) for k, v in tags.items() if v is not None]
    for chunk, size in ((new_params, 100), (new_tags, 100), (new_metrics, 1000)):  # MLflow's batch limits
        for i in range(0, len(chunk), size):
            part = chunk[i:i + size]
            client.log_batch(run_id, params=part if chunk is new_params else (),
                             tags=part if chunk is new_tags else (), metrics=part if chunk is new_metrics else ())
    for source, to in artifacts:
        if source.is_dir():
            if any(source.iterdir()):
                client.log_artifacts(run_id, str(source), to or None)
        elif source.is_file():
            client.log_artifact(run_id, str(source), to or None)
    if status in _STATUS:
        client.set_terminated(run_id, _STATUS[status], end_time=int(end * 1000) if end else None)
    return run_id, action


def _matches(logged_params: dict[str, str], logged: dict[str, dict[int, float]], params: dict[str, str],
             metrics: dict[str, list[tuple[int, float]]]) -> bool:
    """Whether what MLflow holds is part of what the folder says (then the rest can be added)."""
    if any(params.get(k) != v for k, v in logged_params.items()):
        return False
    for name, points in logged.items():
        wanted = dict(metrics.get(name, ()))
        if any(step not in wanted or wanted[step] != value for step, value in points.items()):
            return False
    return True
