"""kexp/layout.py: the run-folder contract. Paths by name, the metrics.json format (round trip, the
format-1 upgrade, unknown keys kept), and every reader reading the run folders kexp 0.1 wrote before
the redesign (tests/fixtures/legacy_runs)."""

from __future__ import annotations

import json
import re

import pytest
from cli_runner import invoke
from helpers import LEGACY_RUNS, holdout_metrics, kfold_metrics, make_run, render

from kexp import layout, plots, report, runs
from kexp.layout import Baseline, FoldMetrics, Metrics, Section, read_fold_metrics, read_metrics
from kexp.progress import render_result

HOLDOUT = LEGACY_RUNS / "20261127T111508Z-legacy-holdout-e676e5"
KFOLD = LEGACY_RUNS / "20261127T111528Z-legacy-kfold-0e2d1a"


# --------------------------------------------------------------------------- paths
def test_split_folders_and_histories_by_name():
    assert layout.split_dir("holdout", kfold=False) == ""
    assert layout.split_dir("r1-f3", kfold=True) == "folds/r1-f3"
    assert layout.split_dir("final", kfold=True) == layout.split_dir("final", kfold=False) == "final"
    assert layout.split_history("holdout", kfold=False) == "history.csv"
    assert layout.split_history("r1-f3", kfold=True) == "folds/r1-f3/history.csv"
    assert layout.split_history("final", kfold=True) == "final_history.csv"


def test_the_legacy_folders_have_the_files_the_layout_names():
    for name in (layout.STATUS, layout.CONFIG_YAML, layout.CONFIG_JSON, layout.ENVIRONMENT, layout.METRICS,
                 layout.SUMMARY, layout.PREPROCESSING):
        assert (HOLDOUT / name).is_file() and (KFOLD / name).is_file(), name
    assert (HOLDOUT / layout.HISTORY).is_file() and (KFOLD / layout.FOLDS).is_file()
    assert (KFOLD / layout.FINAL_HISTORY).is_file()
    for fold in ("r0-f0", "r0-f1", "r0-f2"):
        assert (KFOLD / layout.split_history(fold, kfold=True)).is_file()
        assert (KFOLD / layout.split_dir(fold, kfold=True) / layout.METRICS).is_file()


# --------------------------------------------------------------------------- the metrics.json format
@pytest.mark.parametrize("path", sorted(LEGACY_RUNS.rglob(layout.METRICS)), ids=lambda p: p.parent.name)
def test_format_2_files_round_trip_exactly(path):
    text = path.read_text()
    data = json.loads(text)
    record = (FoldMetrics if path.parent.parent.name == layout.FOLDS_DIR else Metrics).from_dict(data)
    assert json.dumps(record.to_dict(), indent=2) + "\n" == text  # values and key order


def test_a_legacy_file_reads_into_typed_fields():
    m = read_metrics(KFOLD)
    assert m.version == layout.METRICS_FORMAT and m.scheme == "kfold" and m.best_epoch == 3
    assert m.validation.best["accuracy"] == pytest.approx(0.4) and m.validation.best_std["accuracy"] > 0.17
    assert m.validation.best_epoch_source == "mean_curve" and m.curve.metric == "val_loss"
    assert [f.id for f in m.fold_list()] == ["r0-f0", "r0-f1", "r0-f2"]
    assert m.fold_list()[2].validation.last["accuracy"] == pytest.approx(0.65)
    assert m.final_model.n_train == 120 and m.baseline.beats is True
    assert [name for name, _ in m.output_list()] == ["layer_1"] and m.directions is None
    fold = read_fold_metrics(KFOLD / layout.split_dir("r0-f1", kfold=True))
    assert fold.id == "r0-f1" and fold.n_val == 40 and fold.train.last["loss"] == pytest.approx(1.361, abs=1e-3)


def test_format_1_is_read_in_format_2s_words():
    old = kfold_metrics()
    old["train"]["final"]["learning_rate"] = 0.001
    m = Metrics.from_dict(old)
    assert m.version == 1 and m.format is None
    assert m.validation.last == {"loss": 13.0, "mae": 2.6} and m.validation.last_std == {"loss": 0.8, "mae": 0.08}
    assert m.train.last == {"loss": 5.0, "mae": 1.6}  # learning_rate is not a metric
    assert [f.validation.last["mae"] for f in m.fold_list()] == [2.5, 2.6, 2.7]
    out = m.to_dict()
    assert "format" not in out and "final" not in json.dumps({k: v for k, v in out.items() if k != "final_model"})
    assert list(out["validation"]) == ["last", "best", "last_std", "best_std"]  # the order, renamed
    assert Metrics.from_dict(out) == m  # reading the upgrade again changes nothing


def test_unknown_keys_survive_a_round_trip_in_place():
    data = holdout_metrics()
    data = {"format": 2, "from_the_future": {"a": [1, 2]}, **data}
    data["validation"]["calibration"] = {"ece": 0.1}
    data["baseline"]["new_baseline_field"] = 3
    data["folds"] = [{"id": "r0-f0", "extra_per_fold": True, "validation": {"last": {"loss": 1.0}}}]
    data = json.loads(json.dumps(data).replace('"final"', '"last"'))
    m = Metrics.from_dict(data)
    assert m.extra == {"from_the_future": {"a": [1, 2]}} and m.validation.extra == {"calibration": {"ece": 0.1}}
    assert m.baseline.extra == {"new_baseline_field": 3} and m.fold_list()[0].extra == {"extra_per_fold": True}
    assert json.dumps(m.to_dict()) == json.dumps(data)


def test_a_damaged_file_is_read_as_far_as_it_goes_and_written_back_unchanged():
    data = {"format": 2, "validation": "oops", "epochs_run": "3", "folds": [1, {"id": "r0-f0"}],
            "baselines": {"a": None, "b": {"value": 0.5}}, "test": [1]}
    m = Metrics.from_dict(data)
    assert m.validation is None and m.epochs_run is None and m.test is None
    assert [f.id for f in m.fold_list()] == ["r0-f0"] and [b.value for b in m.baseline_list()] == [0.5]
    assert m.to_dict() == data and list(m.to_dict()) == list(data)
    assert Metrics.from_dict([1, 2]) == Metrics() and Metrics.from_dict(None).to_dict() == {}


def test_a_record_built_in_code_writes_the_format_with_its_nulls():
    m = Metrics(format=layout.METRICS_FORMAT, command="train", main_metric="accuracy",
                directions={"accuracy": "max", "loss": "min"},
                validation=Section(last={"accuracy": 0.5}, best={"accuracy": 0.6}),
                baseline=Baseline(metric="accuracy", value=0.3, model=0.6, margin=0.3, beats=True))
    out = m.to_dict()
    assert list(out) == ["format", "command", "main_metric", "directions", "stop_reason", "validation",
                         "final_model", "test", "baseline"]
    assert out["stop_reason"] is None and out["final_model"] is None and out["test"] is None
    assert out["validation"] == {"last": {"accuracy": 0.5}, "best": {"accuracy": 0.6}}
    assert Metrics.from_dict(out) == m and m.direction("val_accuracy") == "max" and m.direction("auc") is None


def test_read_metrics_never_raises_on_a_files_contents(tmp_path):
    assert read_metrics(tmp_path) is None  # missing: no problem to report
    problems: list[str] = []
    (tmp_path / layout.METRICS).write_bytes(b'{"format": 2, "epochs')
    assert read_metrics(tmp_path, problems) is None and problems == ["metrics.json: unreadable (JSONDecodeError)"]
    (tmp_path / layout.METRICS).write_text("[1, 2]")
    assert read_metrics(tmp_path / layout.METRICS) is None
    (tmp_path / layout.METRICS).write_text('{"epochs_run": 4}')
    assert read_metrics(str(tmp_path)).epochs_run == 4


# --------------------------------------------------------------------------- every reader
def test_read_run_reads_metrics_through_the_layout():
    record = runs.read_run(KFOLD)
    assert isinstance(record.metrics, Metrics) and record.metrics == read_metrics(KFOLD)
    assert record.status == "completed" and record.config["name"] == "legacy-kfold" and not record.problems


def test_compare_reads_the_legacy_folders():
    holdout, kfold = report.compare([LEGACY_RUNS]).values()
    assert holdout["val_best"] == pytest.approx(0.125) and holdout["test"] == pytest.approx(0.1667, abs=1e-4)
    assert kfold["val_best"] == pytest.approx(0.4) and kfold["val_best_std"] == pytest.approx(0.1768, abs=1e-4)
    assert kfold["margin"] == pytest.approx(0.0683, abs=1e-4) and holdout["margin"] < 0
    result = invoke("compare", LEGACY_RUNS)
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line.startswith("legacy")]
    assert re.search(r"train\s+3\s+3\s+0\.125\s+0\.125\s+0\.1667\s+0\.3307\s+0\.3307\s+-0\.206", rows[0]), rows
    assert re.search(r"kfold\s+3\s+3\s+0\.4±0\.18\s+0\.4±0\.18\s+0\.2333\s+0\.3317\s+0\.3317\s+\+0\.0683",
                     rows[1]), rows


def test_show_reads_the_legacy_folders():
    for folder, lines in ((HOLDOUT, [r"accuracy\s+0\.1250\s+0\.1250\s+0\.2292\s+0\.1667",
                                     "the model does NOT beat the baseline"]),
                          (KFOLD, [r"accuracy\s+0\.4000 ± 0\.177\s+0\.4000 ± 0\.177\s+0\.4458\s+0\.2333",
                                   r"r0-f2\s+3\s+3\s+0\.6500\s+0\.6500\s+80\s+40\s+3s",
                                   "best at epoch 3: best of the mean val_loss curve"])):
        result = invoke("show", folder)
        assert result.exit_code == 0, result.output
        for line in lines:
            assert re.search(line, " ".join(result.stdout.split())), (line, result.stdout)


def test_plots_and_the_end_of_run_table_read_the_legacy_folders():
    curves = plots.read_curves(runs.read_run(KFOLD))
    assert curves.n_folds == 3 and curves.epochs == [1, 2, 3]
    assert curves.mean["val_accuracy"][-1] == pytest.approx(0.4) and curves.std["val_accuracy"][-1] > 0.17
    text = " ".join(render(render_result(read_metrics(HOLDOUT), HOLDOUT)).split())
    assert "accuracy 0.1250 0.1250 0.2292 0.1667" in text and f"run folder: {HOLDOUT}" in text


def test_compare_sorts_a_metric_the_way_the_run_wrote_it(tmp_path):
    """`directions` (written by new runs) beats the guess from the metric's name (`zorp`: min)."""
    for value in (0.2, 0.9, 0.5):
        metrics = {**holdout_metrics(), "format": 2, "main_metric": "zorp",
                   "validation": {"last": {"zorp": value}, "best": {"zorp": value}}}
        make_run(tmp_path, f"z{value}", metrics=metrics, history=False)
    assert [v["val_best"] for v in report.compare([tmp_path], sort="val_best").values()] == [0.2, 0.5, 0.9]
    for folder in tmp_path.iterdir():
        data = json.loads((folder / layout.METRICS).read_text())
        runs.write_json(folder / layout.METRICS, {**data, "directions": {"zorp": "max"}})
    assert [v["val_best"] for v in report.compare([tmp_path], sort="val_best").values()] == [0.9, 0.5, 0.2]
    assert [v["val_best"] for v in report.compare([tmp_path], sort="zorp").values()] == [0.9, 0.5, 0.2]


def test_a_new_run_writes_metrics_the_format_reads_back_exactly(tiny_config, tmp_path):
    """The writer follows the contract: every metrics.json of a fresh K-fold run is a `Metrics` (or a
    fold's `FoldMetrics`) whose to_dict() is the file, with the directions Keras gave."""
    result = invoke("kfold", tiny_config, "--runs-dir", tmp_path / "runs", "--quiet",
                    "--set", "validation={scheme: kfold, n_splits: 2}", "--set", "training.epochs=1")
    assert result.exit_code == 0, result.output
    (folder,) = (tmp_path / "runs").iterdir()
    data = json.loads((folder / layout.METRICS).read_text())
    m = read_metrics(folder)
    assert m.to_dict() == data and list(m.to_dict()) == list(data) and m.extra == {}, m.extra
    assert m.version == layout.METRICS_FORMAT and m.direction("val_accuracy") == "max"
    for fold in m.fold_list():
        path = folder / layout.split_dir(fold.id, kfold=True) / layout.METRICS
        written = json.loads(path.read_text())
        assert read_fold_metrics(path).to_dict() == written and read_fold_metrics(path).extra == {}
