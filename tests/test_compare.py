"""compare / show / plots on metrics.json format 2 (several outputs, `last` for the last epoch), format 1
still read, and the compare friction of issue 14. Run folders are fabricated here (no training), except
one test that resolves a Keras default."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from cli_runner import invoke, stderr_of
from helpers import (
    BOSTON,
    REUTERS,
    TINY_CONFIG,
    TWO_OUTPUTS_CONFIG,
    holdout_metrics,
    kfold_metrics,
    make_run,
    render,
    write_history,
)

from kexp import plots, report, runs

PNG = b"\x89PNG\r\n\x1a\n"

# --------------------------------------------------------------------------- two outputs, format 2
TWO_OUTPUTS = copy.deepcopy(REUTERS)
TWO_OUTPUTS.update(
    dataset={"name": "csv", "path": "houses.csv", "target": {"price": "price", "band": "band"}},
    compile={"optimizer": {"name": "rmsprop"},
             "loss": {"price": {"name": "mse"}, "band": {"name": "sparse_categorical_crossentropy"}},
             "metrics": {"price": [{"name": "mae"}], "band": [{"name": "accuracy"}]}},
)
TWO_COLUMNS = ("loss", "price_loss", "band_loss", "price_mae", "band_accuracy")


def two_output_metrics(fmt: int = 2, *, price_mae: float = 0.5, band_acc: float = 0.7) -> dict:
    def scores(shift: float) -> dict:
        return {"loss": 1.0 + shift, "price_loss": 0.4 + shift, "band_loss": 0.6 + shift,
                "price_mae": price_mae + shift, "band_accuracy": band_acc - shift}

    last = "last" if fmt == 2 else "final"
    metrics = {
        "command": "train", "dataset": "csv", "scheme": "holdout", "monitor": "val_loss", "mode": "min",
        "main_metric": "price_mae" if fmt == 2 else "mae", "epochs_run": 12, "best_epoch": 8,
        "validation": {"best": scores(0.0), last: scores(0.1)},
        "train": {last: {**scores(-0.2), "learning_rate": 0.001}},
        "test": scores(0.05),
        "final_model": None,
        "baseline": {"task": "regression", "metric": "mae", "output": "price", "validation": {"mae": 0.9},
                     "value": 0.9, "model": price_mae, "margin": 0.9 - price_mae, "beats": True},
        "durations": {"total_s": 3.0},
    }
    if fmt == 2:
        metrics["format"] = 2
        metrics["outputs"] = {"price": {"main_metric": "price_mae", "task": "regression"},
                              "band": {"main_metric": "band_accuracy", "task": "multiclass"}}
        metrics["baselines"] = {
            "price": metrics["baseline"],
            "band": {"task": "multiclass", "metric": "accuracy", "output": "band",
                     "validation": {"majority_accuracy": 0.41, "random_accuracy": 0.3}, "value": 0.41,
                     "model": band_acc, "margin": band_acc - 0.41, "beats": True}}
    return metrics


def two_output_history(path: Path, epochs: int = 12, lr: bool = True) -> None:
    writer = runs.HistoryWriter(path)
    for e in range(1, epochs + 1):
        logs = {}
        for prefix in ("", "val_"):
            logs.update({f"{prefix}{c}": 1.0 / e + (0.1 if prefix else 0) for c in TWO_COLUMNS})
        if lr:
            logs["learning_rate"] = 0.001
        writer.append(e, logs)
    writer.close()


def two_output_run(root: Path, name: str = "houses", fmt: int = 2, **kwargs) -> Path:
    path = make_run(root, name, config=TWO_OUTPUTS, metrics=two_output_metrics(fmt, **kwargs), history=False)
    two_output_history(path / "history.csv")
    return path


def test_two_outputs_compare_shows_the_first_outputs_main_metric(tmp_path):
    two_output_run(tmp_path, "new", fmt=2)
    two_output_run(tmp_path, "old", fmt=1)  # format 1: main_metric "mae", logged as price_mae
    new, old = report.compare([tmp_path]).values()
    for row in (new, old):
        assert row["val_best"] == 0.5 and row["val_last"] == pytest.approx(0.6), row
        assert row["test"] == pytest.approx(0.55), row
    assert report.compare([tmp_path]).rows[1].fields["metric"] == "price_mae"


def test_show_lists_every_outputs_metrics_and_baselines(tmp_path):
    text = render(report.show(two_output_run(tmp_path)), width=120)
    for name in TWO_COLUMNS:
        assert name in text, name
    assert "majority_accuracy 0.41" in text  # the second output's baseline too
    assert "price" in text and "band" in text


def test_learning_curves_cover_every_outputs_metrics(tmp_path):
    run = two_output_run(tmp_path)
    written = [p.name for p in plots.learning_curves(run)]
    assert written == [f"{c}.png" for c in TWO_COLUMNS]
    assert "learning_rate.png" not in written


# --------------------------------------------------------------------------- "last" epoch vs "final" model
def test_val_last_column_and_val_final_alias(tmp_path):
    make_run(tmp_path, "a", metrics=holdout_metrics(val_acc=0.7))  # format 1: validation.final
    two_output_run(tmp_path, "b")
    comparison = report.compare([tmp_path])
    assert "val_last" in comparison.columns and "val_final" not in comparison.columns
    assert [v["val_last"] for v in comparison.values()] == [pytest.approx(0.69), pytest.approx(0.6)]
    assert report.compare([tmp_path], columns="run,val_final").values()[0]["val_last"] == pytest.approx(0.69)
    assert [r.name for r in report.compare([tmp_path], sort="val_final").records] == \
        [r.name for r in report.compare([tmp_path], sort="val_last").records]
    assert report.compare([tmp_path], where=["val_final<0.65"]).values()[0]["val_last"] == pytest.approx(0.6)
    assert report.compare([tmp_path], columns="loss@final,loss@last").values()[0] == {"loss@last": 1.0}
    text = render(report.table(comparison))
    assert "last" in text and "end" not in text.split("\n")[1:3]


def test_show_says_last_epoch_and_final_model(tmp_path):
    path = make_run(tmp_path, "reuters")
    text = render(report.show(path))
    assert "val@last" in text and "final model" in text
    assert "@end" not in text


def test_markdown_headers_are_whole_words(tmp_path):
    make_run(tmp_path, "a")
    make_run(tmp_path, "b", training__batch_size=8)
    text = report.markdown(report.compare([tmp_path]))
    header = text.splitlines()[0]
    assert "chan ce" not in header and "base line" not in header
    assert "| chance |" in header and "val last" in header


# --------------------------------------------------------------------------- --where operators
@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    for name, epochs, acc in (("e5", 5, 0.60), ("e10", 10, 0.75), ("e20", 20, 0.80)):
        make_run(tmp_path, name, training__epochs=epochs, metrics=holdout_metrics(val_acc=acc))
    return tmp_path


def labels(comparison) -> list[str]:
    return [report.run_label(r.name).rsplit("-", 1)[0] for r in comparison.records]


@pytest.mark.parametrize("where, expected", [
    ("training.epochs>5", ["e10", "e20"]),
    ("training.epochs>=10", ["e10", "e20"]),
    ("training.epochs<10", ["e5"]),
    ("training.epochs<=10.0", ["e5", "e10"]),
    ("training.epochs!=10", ["e5", "e20"]),
    ("training.epochs > 9", ["e10", "e20"]),  # numbers as numbers: 10 > 9 although "10" < "9"
    ("val_best>=0.75", ["e10", "e20"]),
    ("name!=e5", ["e10", "e20"]),
    ("training.epochs==20", ["e20"]),
])
def test_where_supports_comparison_operators(sweep, where, expected):
    assert labels(report.compare([sweep], where=[where])) == expected


def test_where_operators_from_the_command_line(sweep):
    result = invoke("compare", sweep, "--where", "training.epochs>5", "--where", "val_best<0.8", "-f", "csv")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 2  # header + e10


# --------------------------------------------------------------------------- the table's columns
def sweep_config(units0: int, units1: int, l2: float | None, lr: float | None) -> dict:
    config = copy.deepcopy(REUTERS)
    layers = config["model"]["layers"]
    layers[0]["units"], layers[1]["units"] = units0, units1
    if l2 is not None:
        layers[0]["kernel_regularizer"] = {"name": "L2", "l2": l2}
    layers.insert(2, {"layer": "Dropout", "rate": 0.5 if lr else 0.3})
    config["compile"]["optimizer"] = {"name": "adam", **({"learning_rate": lr} if lr is not None else {})}
    return config


def test_learning_rate_and_l2_are_not_crowded_out_by_layer_columns(tmp_path):
    for i, (u0, u1, l2, lr) in enumerate([(64, 64, 0.01, 0.01), (128, 32, 0.001, 0.003), (16, 8, None, 0.0005)]):
        make_run(tmp_path, f"s{i}", config=sweep_config(u0, u1, l2, lr))
    comparison = report.compare([tmp_path])
    assert "compile.optimizer.learning_rate" in comparison.config_columns
    assert "model.layers.0.kernel_regularizer.l2" in comparison.config_columns
    layout = report.table(comparison).layout(100)
    assert layout.hidden == [], layout.hidden
    text = render(report.table(comparison))
    assert all(len(line) <= 100 for line in text.splitlines()), text
    assert "too wide" not in text
    assert "0.0005" in text and "0.003" in text  # learning rates
    assert "learning_rate" in text  # the abbreviations are explained


def test_a_keras_default_shows_its_resolved_value(tmp_path):
    """A run that leaves Adam's learning rate to Keras writes Keras' default into config.json (config.yaml
    keeps what the config said), so compare shows and filters 0.001 without importing Keras."""
    from kexp.config import load_config

    source = tmp_path / "exp.yaml"
    source.write_text(TINY_CONFIG)
    runs_dir = tmp_path / "runs"
    for name, rate in (("tuned", "0.01"), ("default", None)):
        args = ["train", source, "--runs-dir", runs_dir, "--name", name, "--quiet"]
        args += ["--set", "compile.optimizer={name: adam, learning_rate: " + rate + "}"] if rate else \
                ["--set", "compile.optimizer=adam"]
        result = invoke(*args)
        assert result.exit_code == 0, result.output
    default = next(p for p in runs_dir.iterdir() if "-default-" in p.name)
    assert "learning_rate" not in (default / "config.yaml").read_text()
    assert load_config(default / "config.yaml").to_dict()["compile"]["optimizer"] == {"name": "adam"}
    comparison = report.compare([runs_dir], sort="run")
    by_name = {report.run_label(v["run"]).rsplit("-", 1)[0]: v["compile.optimizer.learning_rate"]
               for v in comparison.values()}
    assert by_name == {"tuned": 0.01, "default": 0.001}
    assert labels(report.compare([runs_dir], where=["compile.optimizer.learning_rate<0.005"])) == ["default"]


# --------------------------------------------------------------------------- --plot
def test_plot_accepts_the_val_acc_alias(tmp_path):
    make_run(tmp_path, "a")
    make_run(tmp_path, "b", training__batch_size=8)
    target = tmp_path / "out.png"
    result = invoke("compare", tmp_path, "--plot", "val_acc", "--output", target)
    assert result.exit_code == 0, result.output
    assert target.read_bytes()[:8] == PNG


def test_plot_of_an_unknown_metric_is_a_usage_error_before_the_table(tmp_path):
    make_run(tmp_path, "a")
    result = invoke("compare", tmp_path, "--plot", "accurcy", "--output", tmp_path / "x.png")
    assert result.exit_code == 2, result.output
    assert "did you mean accuracy" in stderr_of(result)
    assert "reuters" not in result.stdout and "run" not in result.stdout  # no table printed
    assert not (tmp_path / "x.png").exists()


def test_plot_draws_training_dashed_and_validation_solid(tmp_path, monkeypatch):
    import matplotlib.axes

    drawn = []
    original = matplotlib.axes.Axes.plot

    def spy(self, *args, **kwargs):
        drawn.append((args[2] if len(args) > 2 else kwargs.get("linestyle"), kwargs.get("label")))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    records = [runs.read_run(make_run(tmp_path, name)) for name in ("a", "b")]
    plots.compare_plot(records, "accuracy", tmp_path / "cmp.png", labels=["a", "b"])
    styles = [style for style, _ in drawn]
    assert styles.count("-") == 2 and styles.count("--") == 2, drawn


# --------------------------------------------------------------------------- interrupted runs
def interrupted_kfold(root: Path, done: int = 2) -> Path:
    """A K-fold run of 3 folds stopped after `done` of them: no metrics.json, fold files only."""
    path = make_run(root, "boston", config=BOSTON, status="interrupted", metrics=None, history=False)
    for fold in kfold_metrics()["folds"][:done]:
        write_history(path / "folds" / fold["id"] / "history.csv", 30, metric="mae", low_at=13, start=3.0)
        runs.write_json(path / "folds" / fold["id"] / "metrics.json", fold)
    write_history(path / "folds" / "r0-f2" / "history.csv", 4, metric="mae", start=3.0)  # cut short
    return path


def test_an_interrupted_kfold_run_shows_what_finished_and_how_to_resume(tmp_path):
    path = interrupted_kfold(tmp_path)
    (row,) = report.compare([tmp_path]).values()
    assert row["status"] == "interrupted"
    assert row["epochs"] == 30 and row["best_epoch"] is not None
    assert row["val_best"] is not None and row["val_last"] is not None
    result = invoke("compare", tmp_path)
    assert result.exit_code == 0, result.output
    hint = " ".join(stderr_of(result).split())
    assert f"kexp kfold --resume {path}" in hint and "2 of 3 folds" in hint
    result = invoke("show", path)
    assert result.exit_code == 0, result.output
    assert "kexp kfold --resume" in " ".join(result.stdout.split()) and "2 of 3" in result.stdout


def test_an_interrupted_holdout_run_shows_its_finished_epochs(tmp_path):
    make_run(tmp_path, "reuters", status="interrupted", metrics=None)  # history.csv: 20 epochs
    (row,) = report.compare([tmp_path]).values()
    assert row["epochs"] == 20 and row["best_epoch"] == 9
    assert row["val_best"] == pytest.approx(0.5 + 0.015 * 9)
    assert row["val_last"] == pytest.approx(0.5 + 0.015 * 9)


# --------------------------------------------------------------------------- learning_rate
def test_lr_of_reduce_on_plateau_is_not_a_metric_row(tmp_path):
    path = two_output_run(tmp_path, fmt=1)  # format 1 kept learning_rate in train.final
    text = render(report.show(path), width=120)
    assert "learning_rate" not in text.split("baseline")[0]
    assert "learning_rate.png" not in [p.name for p in plots.learning_curves(path)]


# --------------------------------------------------------------------------- as the training side writes them
TRAINED_TWO_OUTPUTS = TWO_OUTPUTS_CONFIG.replace(
    "training: {epochs: 2, batch_size: 16}",
    "training: {epochs: 2, batch_size: 16, callbacks: [{name: ReduceLROnPlateau, patience: 1}]}",
) + "validation: {scheme: holdout}\n"


def test_a_trained_two_output_run_is_compared_shown_and_plotted(tmp_path):
    rows = ["a,b,price,band"] + [f"{i % 7 / 7:.3f},{i % 5 / 5:.3f},{i % 7 / 7 + i % 5 / 5:.3f},{'xyz'[i % 3]}"
                                 for i in range(60)]
    (tmp_path / "two.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "two.yaml").write_text(TRAINED_TWO_OUTPUTS)
    result = invoke("train", tmp_path / "two.yaml", "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    assert "learning_rate" in (run / "history.csv").read_text().splitlines()[0]
    (row,) = report.compare([tmp_path / "runs"]).values()
    assert row["val_best"] is not None and row["val_last"] is not None and row["test"] is not None, row
    text = render(report.show(run), width=120)
    metric_rows = text.split("metrics ")[1].split("baseline")[0]
    assert "price_mae" in metric_rows and "band_accuracy" in metric_rows and "learning_rate" not in metric_rows
    names = {p.name for p in (run / "plots").iterdir()}
    assert {"loss.png", "price_mae.png", "band_accuracy.png"} <= names and "learning_rate.png" not in names
