"""kexp/progress.py: the Display observer (events in, what the terminal shows out) and the end-of-run
tables (`render_result`, the renderer `kexp show` uses too), from metrics dicts alone: no training."""

import io
import json
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


# --------------------------------------------------------------------------- logs when not in a terminal
class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_not_a_terminal_gives_one_plain_line_per_epoch_and_no_bars():
    out = console()  # a file, not a terminal
    display = Display(out)
    assert display.mode == "plain"
    with display:
        display.start(Path("/runs/k"), ["r0-f0", "r0-f1"], 3)
        for fold in ("r0-f0", "r0-f1"):
            display.split_start(fold, 3)
            for epoch in (1, 2, 3):
                display.epoch_end(fold, epoch, {"loss": 1.0 / epoch, "val_loss": 2.0 / epoch})
            display.split_end(fold, {"epochs_run": 3, "best_epoch": 3, "validation": {"best": {"loss": 0.6667}}})
    lines = out.file.getvalue().splitlines()
    assert lines[0] == "run folder: /runs/k"
    assert "r0-f0 epoch 1/3  loss 1.000  val_loss 2.000" in lines
    assert "r0-f1 epoch 3/3  loss 0.333  val_loss 0.667" in lines
    assert sum(" epoch " in line for line in lines) == 6  # every epoch of every fold, each once
    assert "r0-f1 done: 3 epochs, best epoch 3, val_loss 0.667" in lines
    assert not any(c in out.file.getvalue() for c in "━╸\r\x1b")  # no bars, no cursor moves


def test_plain_lines_are_throttled_when_epochs_are_fast_and_the_last_one_is_never_lost():
    out, clock = console(), FakeClock()
    display = Display(out, mode="plain", interval=10.0, clock=clock)
    display.split_start("holdout", 100)
    for epoch in range(1, 51):  # 50 fast epochs: 0.5 s each
        clock.now = epoch * 0.5
        display.epoch_end("holdout", epoch, {"loss": 1.0})
    shown = [int(line.split()[2].split("/")[0]) for line in out.file.getvalue().splitlines()]
    assert shown == [1, 21, 41], shown  # the first, then one per 10 s
    display.report(Result(Path("/runs/h"), {"format": 2, "epochs_run": 50}, "completed"))  # stopped early at 50
    assert "holdout epoch 50/100  loss 1.000" in out.file.getvalue().splitlines()


def test_quiet_prints_no_progress_in_any_mode():
    for mode in ("live", "plain", "json"):
        out = console()
        display = Display(out, quiet=True, mode=mode)
        with display:
            display.start(Path("/runs/q"), ["holdout"], 2)
            display.split_start("holdout", 2)
            display.epoch_end("holdout", 1, {"loss": 1.0})
            display.note("a note")
        assert out.file.getvalue() == "", (mode, out.file.getvalue())


def test_json_events_are_one_strict_json_object_per_line():
    out = console()
    display = Display(out, mode="json")
    with display:
        display.start(Path("/runs/j"), ["holdout"], 2)
        display.split_start("holdout", 2)
        display.epoch_end("holdout", 1, {"loss": float("nan"), "val_loss": 2.0})
        display.report(Result(Path("/runs/j"), {"format": 2, "best_epoch": 1}, "completed"))
    events = [json.loads(line) for line in out.file.getvalue().splitlines()]  # strict: no NaN literal
    assert [e["event"] for e in events] == ["start", "split_start", "epoch", "end"]
    assert events[2] == {"event": "epoch", "split": "holdout", "epoch": 1, "epochs": 2,
                         "logs": {"loss": None, "val_loss": 2.0}}
    assert events[3]["run"] == "/runs/j" and events[3]["status"] == "completed"


def _json_lines(stdout: str) -> list[dict]:
    lines = stdout.splitlines()
    assert lines, "nothing on stdout"
    return [json.loads(line) for line in lines]  # every line is one JSON object, nothing else


def test_train_json_logs_every_epoch_and_ends_with_the_run_folder(tiny_config, tmp_path):
    from cli_runner import invoke

    result = invoke("train", tiny_config, "--runs-dir", tmp_path / "runs", "--json-logs")
    assert result.exit_code == 0, result.output
    events = _json_lines(result.stdout)
    assert events[0]["event"] == "start" and events[-1]["event"] == "end"
    epochs = [e for e in events if e["event"] == "epoch"]
    assert [(e["split"], e["epoch"]) for e in epochs] == [("holdout", 1), ("holdout", 2)]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(epochs[0]["logs"])
    end = events[-1]
    assert end["status"] == "completed" and Path(end["run"]).is_dir() and Path(end["run"]) == Path(events[0]["run"])
    assert end["metrics"]["best_epoch"] in (1, 2)


def test_kfold_without_a_terminal_prints_plain_lines_and_quiet_prints_none(tiny_config, tmp_path):
    from cli_runner import invoke

    kfold = ["--set", "validation={scheme: kfold, n_splits: 2}", "--runs-dir", tmp_path / "runs"]
    result = invoke("kfold", tiny_config, *kfold)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for fold in ("r0-f0", "r0-f1"):
        assert sum(line.startswith(f"{fold} epoch ") for line in lines) == 2, result.stdout
        assert any(line.startswith(f"{fold} done: 2 epochs") for line in lines), result.stdout
    result = invoke("kfold", tiny_config, *kfold, "--quiet")
    assert result.exit_code == 0, result.output
    assert " epoch 1/2" not in result.stdout and "run folder:" in result.stdout  # the tables only
    result = invoke("kfold", tiny_config, *kfold, "--json-logs")
    events = _json_lines(result.stdout)
    assert [e["split"] for e in events if e["event"] == "split_end"] == ["r0-f0", "r0-f1"]
    assert sum(e["event"] == "epoch" for e in events) == 4


def test_sweep_json_logs_have_each_trials_start_and_end(tiny_config, tmp_path):
    from cli_runner import invoke

    search = "search={space: {model.layers.0.units: [4, 8]}, objective: val_loss}"
    result = invoke("sweep", tiny_config, "--set", search, "--runs-dir", tmp_path / "runs", "--json-logs")
    assert result.exit_code == 0, result.output
    events = _json_lines(result.stdout)
    starts = [e for e in events if e["event"] == "trial_start"]
    ends = [e for e in events if e["event"] == "trial_end"]
    assert [e["trial"] for e in starts] == [e["trial"] for e in ends] == ["t000", "t001"]
    assert all(e["status"] == "completed" and isinstance(e["objective"], float) for e in ends)
    assert sum(e["event"] == "epoch" for e in events) == 4
    assert events[-1]["event"] == "end" and Path(events[-1]["sweep"]).is_dir()
