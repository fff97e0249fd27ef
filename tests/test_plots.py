"""kexp.plots: learning-curve PNGs of fabricated run folders, and the comparison overlay."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import BOSTON, assert_png_plot, make_run  # the run-folder fabricator (tests/helpers.py)

from kexp import plots, runs
from kexp.errors import RunError


def assert_png(path: Path) -> None:
    """A decodable PNG of a plot's size with curves on it, not only the right magic bytes."""
    assert_png_plot(path)


def test_holdout_run_gets_loss_and_main_metric_plots(tmp_path):
    run = make_run(tmp_path, "reuters")
    written = plots.learning_curves(run)
    assert written == [run / "plots" / "loss.png", run / "plots" / "accuracy.png"]
    for path in written:
        assert_png(path)


def test_kfold_run_plots_the_mean_curve_over_folds(tmp_path):
    run = make_run(tmp_path, "boston", config=BOSTON)
    written = plots.learning_curves(run)
    assert [p.name for p in written] == ["loss.png", "mae.png"]
    for path in written:
        assert_png(path)
    curves = plots.read_curves(runs.read_run(run))
    assert curves.n_folds == 3 and len(curves.epochs) == 30
    assert set(curves.std) == {"loss", "mae", "val_loss", "val_mae"}


def test_kfold_curves_stop_at_the_shortest_fold(tmp_path):
    run = make_run(tmp_path, "boston", config=BOSTON)
    history = run / "folds" / "r0-f1" / "history.csv"
    lines = history.read_text().splitlines(keepends=True)
    history.write_text("".join(lines[:11]))  # header + 10 epochs (early stopping)
    curves = plots.read_curves(runs.read_run(run))
    assert curves.epochs == list(range(1, 11)) and len(curves.mean["val_mae"]) == 10


def test_partial_run_is_plotted_from_the_epochs_it_has(tmp_path):
    run = make_run(tmp_path, "reuters", status="running", metrics=None)
    history = run / "history.csv"
    history.write_text(history.read_text()[:-20])  # a row cut short by a crash
    assert [p.name for p in plots.learning_curves(run)] == ["loss.png", "accuracy.png"]


@pytest.mark.parametrize("damage", ["empty history", "garbage history", "no folder", "file not folder"])
def test_a_broken_run_folder_gives_no_plots_and_no_exception(tmp_path, damage):
    run = make_run(tmp_path, "reuters", metrics=None)
    if damage == "empty history":
        (run / "history.csv").write_text("")
    elif damage == "garbage history":
        (run / "history.csv").write_bytes(b"\xff\x00epoch\nnot,a,number\n")
    elif damage == "no folder":
        run = tmp_path / "missing"
    else:
        run = run / "status.json"
    assert plots.learning_curves(run) == []


def test_an_unwritable_plots_folder_gives_no_plots_and_no_exception(tmp_path):
    run = make_run(tmp_path, "reuters")
    (run / "plots").write_text("a file where the folder should be")
    assert plots.learning_curves(run) == []


def test_compare_plot_overlays_validation_curves(tmp_path):
    records = [runs.read_run(make_run(tmp_path, name)) for name in ("a", "b")]
    records.append(runs.read_run(make_run(tmp_path, "boston", config=BOSTON)))  # no val_accuracy: left out
    out = plots.compare_plot(records, "accuracy", tmp_path / "sub" / "cmp.png", labels=["a", "b", "boston"])
    assert out == tmp_path / "sub" / "cmp.png"
    assert_png(out)


def test_compare_plot_without_any_curve_says_which_exist(tmp_path):
    records = [runs.read_run(make_run(tmp_path, "a"))]
    with pytest.raises(RunError, match=r"val_mae curve; found: val_accuracy, val_loss"):
        plots.compare_plot(records, "mae", tmp_path / "x.png")


def test_importing_plots_does_not_import_matplotlib():
    code = "import sys, kexp.plots; print(sorted(m for m in sys.modules if m.startswith('matplotlib')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
