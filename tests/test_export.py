"""`kexp export`: run and sweep folders read back through TensorBoard's own event reader and MLflow's
own client (made with helpers.make_run/make_sweep: no training)."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_runner import invoke, stderr_of
from helpers import BOSTON, heavy_imports, make_run, make_sweep

from kexp import layout, runs
from kexp.report import flatten


# --------------------------------------------------------------------------- reading back
def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in `folder`'s event files as TensorBoard reads them: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    reader = EventAccumulator(str(folder))
    reader.Reload()
    tags = reader.PluginTagToContent("scalars")
    return {tag: [(e.step, tensor_util.make_ndarray(e.tensor_proto).item()) for e in reader.Tensors(tag)]
            for tag in tags}


def tensorboard_hparams(folder: Path) -> dict:
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    reader = EventAccumulator(str(folder))
    reader.Reload()
    content = reader.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG]
    info = metadata.parse_session_start_info_plugin_data(content)
    return {name: getattr(value, value.WhichOneof("kind")) for name, value in info.hparams.items()}


def history_points(path: Path, float32: bool = False) -> dict[str, list[tuple[int, float]]]:
    """A history CSV as column -> [(epoch, value)]; `float32`: each value rounded to float32, as TensorBoard
    keeps scalars (its fast loader shows no float64 scalar)."""
    columns = runs.read_history(path)
    epochs = [int(e) for e in columns.pop("epoch")]
    return {name: [(e, float(np.float32(v)) if float32 else v) for e, v in zip(epochs, values)]
            for name, values in columns.items()}


def compare_json(*paths) -> list[dict]:
    result = invoke("compare", *paths, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def kfold_run(root: Path) -> Path:
    """A K-fold run folder whose metrics.json has the mean curves over its folds, as kexp writes them."""
    run = make_run(root, "boston", config=BOSTON)
    histories = [history_points(p / layout.HISTORY) for p in sorted((run / layout.FOLDS_DIR).iterdir())]
    metrics = runs.read_json(run / layout.METRICS)
    metrics["curves"] = {name: [sum(h[name][i][1] for h in histories) / len(histories) for i in range(len(points))]
                         for name, points in histories[0].items()}
    runs.write_json(run / layout.METRICS, metrics)
    return run


def event_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("events.out.tfevents.*"))


# --------------------------------------------------------------------------- TensorBoard
def test_tensorboard_reads_back_exactly_the_history_of_a_holdout_run(tmp_path):
    run = make_run(tmp_path / "runs", "reuters")
    result = invoke("export", run, "--to", "tensorboard", "--dir", tmp_path / "tb")
    assert result.exit_code == 0, result.output
    scalars = tensorboard_scalars(tmp_path / "tb" / run.name)
    history = history_points(run / layout.HISTORY, float32=True)
    assert history != history_points(run / layout.HISTORY)  # values that float32 rounds
    assert {tag: points for tag, points in scalars.items() if not tag.startswith("summary/")} == history
    assert "tensorboard --logdir" in result.stdout


def test_tensorboard_writes_each_fold_and_the_mean_curves_of_a_kfold_run(tmp_path):
    run = kfold_run(tmp_path / "runs")
    folds = sorted(p.name for p in (run / layout.FOLDS_DIR).iterdir())
    assert invoke("export", run, "--to", "tensorboard", "--dir", tmp_path / "tb").exit_code == 0
    out = tmp_path / "tb" / run.name
    for fold in folds:
        assert tensorboard_scalars(out / "folds" / fold) == history_points(run / "folds" / fold / layout.HISTORY,
                                                                           float32=True)
    curves = layout.read_metrics(run).curves
    assert len(curves) == 4
    mean = {tag: points for tag, points in tensorboard_scalars(out).items() if not tag.startswith("summary/")}
    assert mean == {name: [(e, float(np.float32(v))) for e, v in enumerate(values, start=1)]
                    for name, values in curves.items()}


def test_tensorboard_hparams_hold_the_flattened_config_and_the_final_metrics_of_compare(tmp_path):
    run = make_run(tmp_path / "runs", "reuters")
    assert invoke("export", run, "--to", "tensorboard", "--dir", tmp_path / "tb").exit_code == 0
    out = tmp_path / "tb" / run.name
    config = flatten(runs.read_json(run / layout.CONFIG_JSON))
    assert tensorboard_hparams(out) == pytest.approx({k: v for k, v in config.items() if v is not None})
    (row,) = compare_json(run)
    summary = {tag.removeprefix("summary/"): points for tag, points in tensorboard_scalars(out).items()
               if tag.startswith("summary/")}
    for column in ("val_best", "val_last", "test", "baseline", "margin", "epochs", "best_epoch", "duration"):
        assert summary[column] == [(0, float(np.float32(row[column])))], column
    assert summary["test_accuracy"] == [(0, float(np.float32(0.78)))]


def test_tensorboard_export_twice_rewrites_the_run_folder_without_duplicates(tmp_path):
    run = make_run(tmp_path / "runs", "boston", config=BOSTON)
    tb = tmp_path / "tb"
    assert invoke("export", run, "--to", "tensorboard", "--dir", tb).exit_code == 0
    first = {f.parent: tensorboard_scalars(f.parent) for f in event_files(tb)}
    result = invoke("export", run, "--to", "tensorboard", "--dir", tb)
    assert result.exit_code == 0, result.output
    assert "(rewritten)" in result.stdout
    assert {f.parent: tensorboard_scalars(f.parent) for f in event_files(tb)} == first
    assert len(event_files(tb)) == 1 + 3  # one per folder: the run and its 3 folds
    assert sorted(p.name for p in tb.iterdir()) == [run.name]  # no temporary folder left


def test_tensorboard_puts_a_sweeps_trials_under_the_sweep(tmp_path):
    sweep = make_sweep(tmp_path / "runs", "bs", trials=[{"params": {"training.batch_size": 16}, "objective": 2.5},
                                                         {"params": {"training.batch_size": 32}, "objective": 2.7}])
    trials = sorted(p.name for p in (sweep / layout.TRIALS_DIR).iterdir())
    assert invoke("export", sweep, "--to", "tensorboard", "--dir", tmp_path / "tb").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "tb" / sweep.name).iterdir()) == trials
    sizes = {tensorboard_hparams(tmp_path / "tb" / sweep.name / t)["training.batch_size"] for t in trials}
    assert sizes == {16, 32}


def test_tensorboard_never_writes_over_a_run_folder(tmp_path):
    run = make_run(tmp_path / "runs", "reuters")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    result = invoke("export", run, "--to", "tensorboard", "--dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert "is a kexp run or sweep folder" in stderr_of(result)
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


@pytest.mark.parametrize("args, message", [
    (["--to", "tensorboard"], "--to tensorboard needs --dir DIR"),
    (["--to", "tensorboard", "--dir", "tb", "--tracking-uri", "sqlite:///x.db"], "--tracking-uri: only --to mlflow"),
    (["--to", "mlflow", "--dir", "tb"], "--dir: only --to tensorboard uses it"),
])
def test_export_options_of_the_other_target_are_usage_errors(tmp_path, args, message):
    run = make_run(tmp_path / "runs", "reuters")
    result = invoke("export", run, *args)
    assert result.exit_code == 2
    assert message in stderr_of(result)


@pytest.mark.parametrize("target, package", [("tensorboard", "tensorboard"), ("mlflow", "mlflow")])
def test_a_missing_extra_is_a_one_line_error_naming_it(tmp_path, monkeypatch, target, package):
    monkeypatch.setitem(sys.modules, package, None)  # as if not installed
    run = make_run(tmp_path / "runs", "reuters")
    monkeypatch.chdir(tmp_path)
    args = ["--dir", tmp_path / "tb"] if target == "tensorboard" else []
    result = invoke("export", run, "--to", target, *args)
    assert result.exit_code == 2
    lines = stderr_of(result).strip().splitlines()
    assert lines == [f'kexp export --to {target} needs the {package} package: pip install "kexp[{target}]"']
    assert not (tmp_path / "tb").exists() and not (tmp_path / "mlflow.db").exists()


def test_export_of_a_folder_without_runs_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke("export", tmp_path / "empty", "--to", "tensorboard", "--dir", tmp_path / "tb")
    assert result.exit_code == 1
    assert "no kexp run folders found" in stderr_of(result)


# --------------------------------------------------------------------------- MLflow
@pytest.fixture
def tracking(tmp_path, monkeypatch):
    """A fresh local MLflow store in tmp_path (artifacts in tmp_path/mlruns: MLflow's default is ./mlruns)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def mlflow_runs(uri: str, experiment: str = "kexp") -> list:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], max_results=1000) if found else []


def by_run_id(found: list) -> dict:
    return {run.data.tags["kexp.run_id"]: run for run in found}


def test_mlflow_search_runs_gives_the_params_and_final_metrics_of_kexp_compare(tmp_path, tracking):
    root = tmp_path / "runs"
    make_run(root, "reuters")
    make_run(root, "reuters", training__batch_size=128, training__epochs=10)
    make_run(root, "boston", config=BOSTON)
    result = invoke("export", root, "--to", "mlflow", "--tracking-uri", tracking)
    assert result.exit_code == 0, result.output
    found = by_run_id(mlflow_runs(tracking))
    rows = compare_json(root)
    assert sorted(found) == sorted(row["run"] for row in rows)
    for row in rows:
        run = found[row["run"]]
        config = flatten(runs.read_json(root / row["run"] / layout.CONFIG_JSON))
        assert run.data.params == {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}
        for key, value in row.items():
            if key in config:  # a config key that differs between the runs: a param
                assert run.data.params[key] == (value if isinstance(value, str) else json.dumps(value))
            elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                assert run.data.metrics[key] == pytest.approx(value, rel=0, abs=0), key
        assert run.info.status == "FINISHED" and run.info.run_name == row["run"].split("-", 1)[1]


def test_mlflow_logs_every_epoch_with_its_step_and_the_model_and_plots(tmp_path, tracking):
    from mlflow import MlflowClient

    run = kfold_run(tmp_path / "runs")
    (run / layout.MODEL).write_bytes(b"model bytes")
    (run / layout.PLOTS_DIR).mkdir()
    (run / layout.PLOTS_DIR / "loss.png").write_bytes(b"png bytes")
    assert invoke("export", run, "--to", "mlflow", "--tracking-uri", tracking).exit_code == 0
    client = MlflowClient(tracking)
    (logged,) = mlflow_runs(tracking)
    for fold in (run / layout.FOLDS_DIR).iterdir():
        for name, points in history_points(fold / layout.HISTORY).items():
            history = client.get_metric_history(logged.info.run_id, f"folds/{fold.name}/{name}")
            assert sorted((m.step, m.value) for m in history) == points
    curve = layout.read_metrics(run).curves["val_mae"]
    assert [m.value for m in sorted(client.get_metric_history(logged.info.run_id, "val_mae"), key=lambda m: m.step)
            ] == curve
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert {"model.keras", "config.yaml", "metrics.json", "plots"} <= artifacts
    assert [a.path for a in client.list_artifacts(logged.info.run_id, "plots")] == ["plots/loss.png"]


@pytest.mark.parametrize("store", ["sqlite", "file"])
def test_mlflow_export_twice_updates_the_same_runs(tmp_path, tracking, monkeypatch, store):
    from mlflow import MlflowClient

    if store == "file":  # MLflow's older file store: it keeps a value logged twice twice
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        tracking = (tmp_path / "file-store").as_uri()
    run = make_run(tmp_path / "runs", "reuters")
    assert invoke("export", run, "--to", "mlflow", "--tracking-uri", tracking).exit_code == 0
    (first,) = mlflow_runs(tracking)
    result = invoke("export", run, "--to", "mlflow", "--tracking-uri", tracking)
    assert result.exit_code == 0, result.output
    assert f"-> {first.info.run_id} (updated)" in result.stdout
    (again,) = mlflow_runs(tracking)
    assert again.info.run_id == first.info.run_id
    assert (again.data.params, again.data.metrics, again.data.tags) == (
        first.data.params, first.data.metrics, first.data.tags)
    history = MlflowClient(tracking).get_metric_history(first.info.run_id, "val_loss")
    assert len(history) == 20  # every epoch once


def test_mlflow_replaces_a_run_whose_folder_changed_since(tmp_path, tracking):
    run = make_run(tmp_path / "runs", "reuters")
    assert invoke("export", run, "--to", "mlflow", "--tracking-uri", tracking).exit_code == 0
    metrics = runs.read_json(run / layout.METRICS)
    metrics["test"]["accuracy"] = 0.5  # a value MLflow cannot change in place
    runs.write_json(run / layout.METRICS, metrics)
    result = invoke("export", run, "--to", "mlflow", "--tracking-uri", tracking)
    assert "(replaced)" in result.stdout
    (logged,) = mlflow_runs(tracking)  # the old one is deleted, not listed beside it
    assert logged.data.metrics["test_accuracy"] == 0.5


def test_mlflow_sweep_is_a_parent_run_with_its_trials_as_children(tmp_path, tracking, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)  # the default store: MLflow's own setting
    sweep = make_sweep(tmp_path / "runs", "bs", trials=[{"params": {"training.batch_size": 16}, "objective": 2.5},
                                                         {"params": {"training.batch_size": 32}, "objective": 2.7}])
    trial = next((sweep / layout.TRIALS_DIR).iterdir())
    for paths in ([trial], [sweep], [sweep]):  # a trial alone also goes under its sweep; again: no duplicates
        result = invoke("export", *paths, "--to", "mlflow")
        assert result.exit_code == 0, result.output
    found = by_run_id(mlflow_runs(tracking))
    assert len(found) == 3
    parent = found.pop(sweep.name)
    assert parent.data.tags["kexp.kind"] == "sweep" and parent.data.metrics["best_objective"] == 2.5
    assert json.loads(parent.data.params["search.space.training.batch_size"]) == {"values": [16, 32]}
    assert {run.data.tags["mlflow.parentRunId"] for run in found.values()} == {parent.info.run_id}
    assert sorted(run.data.params["training.batch_size"] for run in found.values()) == ["16", "32"]


def test_tensorboard_export_does_not_import_tensorflow(tmp_path):
    run = make_run(tmp_path / "runs", "reuters")
    heavy = heavy_imports(["export", run, "--to", "tensorboard", "--dir", tmp_path / "tb"])
    assert "tensorflow" not in heavy and "keras" not in heavy
    assert event_files(tmp_path / "tb")


def test_mlflow_store_errors_are_one_kexp_error_without_traceback(tmp_path, tracking):
    run = make_run(tmp_path / "runs", "reuters")
    result = invoke("export", run, "--to", "mlflow", "--tracking-uri", "nosuch://host")
    assert result.exit_code == 1
    assert stderr_of(result).startswith("MLflow (nosuch://host): ")
