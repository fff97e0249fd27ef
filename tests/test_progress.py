"""kexp/progress.py: the Display observer (events in, what the terminal shows out) and the end-of-run
tables (`render_result`, the renderer `kexp show` uses too), from metrics dicts alone: no training."""

import io
import re
from pathlib import Path

from helpers import LEGACY_RUNS
from rich.console import Console

from kexp import report
from kexp.experiment import Result
from kexp.layout import read_metrics
from kexp.progress import Display, render_result


def text_of(renderable, width=120) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    return " ".join(re.sub("[│┃]", " ", console.file.getvalue()).split())


def console(width: int = 100) -> Console:
    return Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)


def kfold_two_outputs() -> dict:
    """A format-2 K-fold metrics.json of a price (regression) + band (classes) model."""
    def fold(i, own_best, last):
        return {"id": f"r0-f{i}", "repeat": 0, "fold": i, "epochs_run": 10, "best_epoch": 3 + i,
                "validation": {"last": {"loss": 3.0, "price_mae": last, "band_accuracy": 0.61},
                               "best": {"loss": 2.5, "price_mae": own_best, "band_accuracy": 0.72}},
                "train": {"last": {"loss": 1.0, "price_mae": 0.5, "band_accuracy": 0.9},
                          "best": {"loss": 1.2, "price_mae": 0.6, "band_accuracy": 0.8}}}
    return {
        "format": 2, "command": "kfold", "scheme": "kfold", "monitor": "val_price_mae", "mode": "min",
        "main_metric": "price_mae",
        "outputs": {"price": {"main_metric": "price_mae", "task": "regression"},
                    "band": {"main_metric": "band_accuracy", "task": "multiclass"}},
        "folds": [fold(0, 1.111, 1.515), fold(1, 1.222, 1.525)],
        "validation": {"best": {"loss": 2.75, "price_mae": 1.3579, "band_accuracy": 0.6789},
                       "best_std": {"loss": 0.1, "price_mae": 0.0246, "band_accuracy": 0.0135},
                       "last": {"loss": 3.0, "price_mae": 1.52, "band_accuracy": 0.61},
                       "last_std": {"loss": 0.0, "price_mae": 0.005, "band_accuracy": 0.0},
                       "best_epoch_source": "mean_curve"},
        "train": {"last": {"loss": 1.0, "price_mae": 0.5, "band_accuracy": 0.9}},
        "epochs_run": 10, "best_epoch": 4,
        "curve": {"metric": "val_price_mae", "best_epoch": 4, "smoothed": None},
        "final_model": None, "test": None,
        "baseline": {"metric": "mae", "value": 2.0, "model": 1.3579, "margin": 0.6421, "beats": True,
                     "output": "price"},
        "baselines": {"price": {"metric": "mae", "value": 2.0, "model": 1.3579, "margin": 0.6421, "beats": True,
                                "output": "price"},
                      "band": {"metric": "accuracy", "value": 0.5, "model": 0.6789, "margin": 0.1789,
                               "beats": True, "output": "band"}},
        "diagnostics": {"sentence": "No overfitting seen in 10 epochs."},
    }


def test_kfold_headline_is_the_mean_curve_score_with_the_last_epoch_mean_beside_it():
    text = text_of(render_result(kfold_two_outputs(), Path("/runs/x")))
    assert "at epoch 4: best of the mean val_price_mae curve" in text
    # every output's main metric: mean ± std at the mean curve's best epoch, then the last-epoch mean
    assert "price_mae 1.3579 ± 0.025 1.5200 ± 0.005" in text, text
    assert "band_accuracy 0.6789 ± 0.013 0.6100 ± 0" in text, text
    # the folds' own bests are shown per fold only, never averaged into a headline
    assert re.search(r"r0-f0 10 3 1\.5150 1\.1110 0\.6100 0\.7200", text), text
    assert "1.1665" not in text  # mean of the folds' own best price_mae
    assert "final" not in text


def test_every_output_gets_its_baseline_line():
    text = text_of(render_result(kfold_two_outputs(), Path("/runs/x")))
    assert "baseline price (mae): 2.0000, model: 1.3579, margin: 0.6421" in text, text
    assert "baseline band (accuracy): 0.5000, model: 0.6789, margin: 0.1789" in text, text


def test_holdout_table_has_every_outputs_metrics_and_no_learning_rate():
    m = {"format": 2, "command": "train", "main_metric": "price_mae", "epochs_run": 5, "best_epoch": 3,
         "outputs": {"price": {"main_metric": "price_mae", "task": "regression"},
                     "band": {"main_metric": "band_accuracy", "task": "multiclass"}},
         "validation": {"last": {"loss": 2.0, "price_mae": 1.25, "band_accuracy": 0.75},
                        "best": {"loss": 1.5, "price_mae": 1.125, "band_accuracy": 0.625}},
         "train": {"last": {"loss": 1.0, "price_mae": 0.5, "band_accuracy": 0.875, "learning_rate": 0.001}},
         "test": {"loss": 2.5, "price_mae": 1.375, "band_accuracy": 0.5}}
    text = text_of(render_result(m, Path("/runs/y")))
    assert "val@best val@last train@last metric epoch 3 epoch 5 epoch test" in text and "final" not in text, text
    # best, last, training at the last epoch, test; the main metrics first
    assert "price_mae 1.1250 1.2500 0.5000 1.3750" in text, text
    assert "band_accuracy 0.6250 0.7500 0.8750 0.5000" in text, text
    assert text.index("price_mae 1.1250") < text.index("band_accuracy 0.6250") < text.index("loss 1.5000")
    assert "learning_rate" not in text


def test_format_1_metrics_still_render():
    m = kfold_two_outputs()
    for key in ("format", "outputs", "baselines"):
        del m[key]
    v = m["validation"]
    m["validation"] = {"final": v["last"], "final_std": v["last_std"], "best": v["best"], "best_std": v["best_std"]}
    for fold in m["folds"]:
        fold["validation"]["final"] = fold["validation"].pop("last")
    text = text_of(render_result(m, Path("/runs/z")))
    assert "price_mae 1.3579 ± 0.025 1.5200 ± 0.005" in text, text
    assert "mean of each fold's own best epoch" in text  # the old meaning, named as such
    assert "r0-f1 10 4 1.5250 1.2220" in text, text
    assert "baseline (mae): 2.0000, model: 1.3579" in text


def test_progress_line_shows_every_output_and_not_the_learning_rate():
    console = Console(file=io.StringIO(), width=200, color_system=None)
    display = Display(console)
    display.split_start("r0-f0", 5)
    logs = {"band_accuracy": 0.5, "band_loss": 0.9, "loss": 2.4, "price_loss": 1.5, "price_mae": 1.05,
            "val_band_accuracy": 0.6, "val_band_loss": 0.8, "val_loss": 3.4, "val_price_loss": 2.5,
            "val_price_mae": 1.3, "learning_rate": 0.001}
    display.epoch_end("r0-f0", 1, logs)
    text = text_of(display.progress.make_tasks_table(display.progress.tasks), width=200)
    for key in ("loss", "price_mae", "band_accuracy", "val_loss", "val_price_mae", "val_band_accuracy"):
        assert re.search(rf"(^| ){key} \d", text), (key, text)
    assert "learning_rate" not in text


def test_progress_line_shows_the_loss_of_an_output_without_metrics():
    console = Console(file=io.StringIO(), width=200, color_system=None)
    display = Display(console)
    display.split_start("holdout", 5)
    display.epoch_end("holdout", 1, {"loss": 2.0, "price_loss": 1.5, "band_loss": 0.5, "band_accuracy": 0.7,
                                     "val_loss": 2.5, "val_price_loss": 2.0, "val_band_loss": 0.5,
                                     "val_band_accuracy": 0.6})
    text = text_of(display.progress.make_tasks_table(display.progress.tasks), width=200)
    assert "price_loss 1.500" in text and "val_price_loss 2.000" in text and "band_accuracy 0.700" in text, text


# --------------------------------------------------------------------------- the Display observer
def test_start_prints_the_run_folder_and_notes_unless_quiet():
    loud, quiet = console(), console()
    for out, is_quiet in ((loud, False), (quiet, True)):
        display = Display(out, quiet=is_quiet)
        with display:
            display.start(Path("/runs/20260101T000000Z-x-abcdef"), ["holdout"], 3)
            display.note("fold r0-f0 already finished; kept")
    text = loud.file.getvalue()
    assert "run folder: /runs/20260101T000000Z-x-abcdef" in text
    assert "fold r0-f0 already finished; kept" in text
    assert quiet.file.getvalue() == ""


def test_kfold_events_drive_one_bar_per_fold_and_an_overall_bar():
    display = Display(console())
    display.start(Path("/runs/k"), ["r0-f0", "r0-f1", "r0-f2"], 4)
    overall = display.progress.tasks[display.overall]
    assert overall.description == "folds" and overall.total == 3
    display.split_start("r0-f0", 4)
    display.epoch_end("r0-f0", 2, {"loss": 1.5, "mae": 0.75, "val_loss": 2.5, "val_mae": 1.25})
    bar = display.progress.tasks[display.tasks["r0-f0"]]
    assert bar.completed == 2 and bar.total == 4
    assert bar.fields["logs"] == "loss 1.500  mae 0.750  val_loss 2.500  val_mae 1.250"
    display.split_end("r0-f0", {})
    assert bar.completed == 4 and not bar.visible and overall.completed == 1
    display.epoch_end("unknown", 1, {"loss": 1.0})  # an event of a split never started changes nothing
    assert [t.completed for t in display.progress.tasks] == [1, 4]


def test_holdout_has_no_overall_bar():
    display = Display(console())
    display.start(Path("/runs/h"), ["holdout"], 2)
    display.split_start("holdout", 2)
    display.split_end("holdout", {})
    assert display.overall is None and len(display.progress.tasks) == 1


def test_report_prints_the_results_and_the_run_folder():
    out = console()
    metrics = read_metrics(LEGACY_RUNS / "20261127T111508Z-legacy-holdout-e676e5").to_dict()
    Display(out, quiet=True).report(Result(Path("/runs/h"), metrics, "completed"))
    text = " ".join(out.file.getvalue().split())
    assert "accuracy 0.1250 0.1250 0.2292 0.1667" in text, text
    assert "the model does NOT beat the baseline" in text and text.endswith("run folder: /runs/h")


def test_the_end_of_a_run_and_show_render_the_metrics_alike():
    """One renderer: the metrics, folds and baseline sections of `kexp show` are the end-of-run output."""
    for folder in sorted(LEGACY_RUNS.iterdir()):
        end = text_of(render_result(read_metrics(folder), folder))
        page = text_of(report.show(folder))
        shown = page[page.index("metrics ─"):page.index("diagnostics ─")]
        assert shown in end, (shown, end)
    assert "accuracy 0.4000 ± 0.177 0.4000 ± 0.177 0.4458 0.2333" in end, end
    assert "final model: retrained 3 epochs on 120 samples" in end
    assert re.search(r"r0-f2 3 3 0\.6500 0\.6500 80 40 3s", end), end


def test_a_stopped_run_says_why():
    m = kfold_two_outputs()
    m["stop_reason"] = "early stopping"
    assert "stopped: early stopping run folder: /runs/s" in text_of(render_result(m, Path("/runs/s")))
