"""Sweep folders read back (no training): the leaderboard of `kexp show SWEEP`, `kexp compare` on a
sweep folder and on a runs folder holding sweeps, and the sweep's plots. Sweep folders are fabricated
with tests/helpers.py `make_sweep`, which follows kexp.layout's "sweep folders" contract."""

from __future__ import annotations

import csv
import io
import json

import pytest
from cli_runner import invoke, stderr_of
from helpers import REUTERS, assert_png_plot, heavy_imports, make_run, make_sweep, render

from kexp import layout, plots, report, runs

UNITS, LR = "model.layers.0.units", "compile.optimizer.learning_rate"


def grid(objectives, **extra):
    """Trials of a units x learning-rate grid, in order, with these objectives."""
    points = [(u, lr) for u in (32, 64) for lr in (0.001, 0.01)]
    return [{"params": {UNITS: u, LR: lr, "training.batch_size": 16}, "objective": value, **extra}
            for (u, lr), value in zip(points, objectives)]


def board_rows(text: str) -> list[str]:
    """The leaderboard's lines that hold a trial (t000, t001, ...), in the order shown."""
    return [line for line in text.splitlines() if any(f" t{i:03d} " in f" {line} " for i in range(100))]


def trial_ids(text: str) -> list[str]:
    return [next(word for word in line.split() if word.startswith("t0")) for line in board_rows(text)]


def after_id(row: str) -> list[str]:
    """A leaderboard row's words after its trial id: the parameters first."""
    words = row.split()
    return words[next(i for i, w in enumerate(words) if w.startswith("t0")) + 1:]


# --------------------------------------------------------------------------- the leaderboard
def test_leaderboard_ranks_a_min_objective_lowest_first_and_marks_the_best(tmp_path):
    sweep = make_sweep(tmp_path, trials=grid([2.5, 2.1, 2.9, 2.3]))
    text = render(report.show(sweep))
    assert trial_ids(text) == ["t001", "t003", "t000", "t002"]
    rows = board_rows(text)
    assert rows[0].split()[:3] == ["*", "1", "t001"] and "2.1000 ± 0.050" in rows[0]
    assert not any("*" in row for row in rows[1:])
    assert "best" in text and "t001: val_mae 2.1000 ± 0.050" in " ".join(text.split())


@pytest.mark.parametrize("mode", ["max", None])  # None: sweep.json has no mode yet; val_accuracy is a score
def test_leaderboard_ranks_a_max_objective_highest_first(tmp_path, mode):
    trials = [{"params": {"model.layers.0.units": u}, "objective": acc}
              for u, acc in ((16, 0.71), (64, 0.83), (256, 0.78))]
    sweep = make_sweep(tmp_path, "reuters", trials=trials, config=REUTERS, metric="val_accuracy", mode=mode)
    board = report.read_leaderboard(sweep)
    assert board.mode == "max"
    assert [(e.rank, e.trial.id, e.best) for e in board.entries] == [
        (1, "t001", True), (2, "t002", False), (3, "t000", False)]
    assert trial_ids(render(report.show(sweep))) == ["t001", "t002", "t000"]


def test_leaderboard_shows_the_parameters_that_vary_with_short_names(tmp_path):
    sweep = make_sweep(tmp_path, trials=grid([2.5, 2.1, 2.9, 2.3]))
    text = render(report.show(sweep))
    header = next(line for line in text.splitlines() if "rank" in line)
    assert "L0.units" in header and "opt.lr" in header
    assert "batch_size" not in text.split("leaderboard")[1]  # the same in every trial: no column
    assert "headers: L<i> model.layers.<i>, opt compile.optimizer, lr learning_rate" in " ".join(text.split())
    assert after_id(board_rows(text)[0])[:2] == ["32", "0.01"]  # t001: 32 units, learning rate 0.01
    for head in ("best", "overfit", "margin", "epochs", "trained", "time", "status", "val_mae", "(min)"):
        assert head in text, head
    assert all(len(line) <= 100 for line in text.splitlines())


def test_leaderboard_shows_whole_structure_choices_as_text(tmp_path):
    key = "model.layers.0.kernel_regularizer"
    trials = [{"params": {key: choice}, "objective": value}
              for choice, value in ((None, 2.6), ({"name": "L2", "l2": 0.001}, 2.2),
                                    ({"name": "L1L2", "l1": 1e-4, "l2": 1e-4}, 2.4))]
    sweep = make_sweep(tmp_path, trials=trials)
    rows = board_rows(render(report.show(sweep), width=120))
    assert [after_id(row)[0] for row in rows] == ["L2(l2=0.001)", "L1L2(l1=0.0001,", "null"]


def test_leaderboard_lists_failed_and_pending_trials_after_the_scored_ones(tmp_path):
    trials = grid([2.5, None, 2.3, None])
    trials[1].update(status="failed", error="TrainingFailed: loss became NaN at epoch 3")
    sweep = make_sweep(tmp_path, trials=trials, status="running")
    board = report.read_leaderboard(sweep)
    assert [(e.trial.id, e.rank, e.trial.status) for e in board.entries] == [
        ("t002", 1, "completed"), ("t000", 2, "completed"), ("t001", None, "failed"), ("t003", None, "pending")]
    result = invoke("show", sweep)
    assert result.exit_code == 0, result.output
    text = result.stdout
    rows = board_rows(text)
    assert rows[2].split()[:2] == ["-", "t001"] and rows[2].split()[-1] == "failed"
    assert rows[3].split()[-1] == "pending"
    flat = " ".join(text.split())
    assert "trials 4 (2 completed, 1 failed, 1 pending)" in flat
    assert "t001: TrainingFailed: loss became NaN at epoch 3" in flat
    assert "2 of 4 trials scored" in flat and "status running" in flat


def test_show_sweep_header_says_method_space_objective_and_best_config(tmp_path):
    continuous = {"type": "float", "min": 0.001, "max": 0.01, "log": True}
    sweep = make_sweep(tmp_path, trials=grid([2.5, 2.1, 2.9, 2.3]),
                       space={UNITS: {"values": [32, 64]}, LR: continuous, "training.batch_size": {"values": [16]}})
    flat = " ".join(render(report.show(sweep), width=200).split())
    assert "method grid; space: continuous (3 parameters)" in flat
    assert "objective val_mae (min): fold mean at the mean curve's best epoch" in flat
    best = sweep / layout.BEST_CONFIG
    assert f"best config {best} (run it: kexp kfold {best})" in flat
    assert "status completed" in flat

    stepped = make_sweep(tmp_path, trials=grid([2.0, 2.1]), space={
        UNITS: {"type": "int", "min": 32, "max": 64, "step": 32, "log": False, "values": [32, 64]},
        LR: [0.001, 0.01, 0.1], "training.epochs": {"type": "int", "min": 1, "max": 4, "log": False}})
    assert "space: 24 points (3 parameters)" in " ".join(render(report.show(stepped), width=200).split())


def test_show_an_interrupted_sweep_says_how_to_resume_it(tmp_path):
    trials = grid([2.5, None, None, None])
    trials[1]["status"] = "interrupted"
    sweep = make_sweep(tmp_path, trials=trials, status="interrupted", best=False)
    flat = " ".join(render(report.show(sweep), width=200).split())
    assert f"resume kexp sweep --resume {sweep}" in flat
    assert "best.yaml is written when the sweep completes" in flat


def test_show_a_sweep_with_a_damaged_sweep_json_says_so(tmp_path):
    sweep = make_sweep(tmp_path, trials=grid([2.5, 2.1]))
    (sweep / layout.SWEEP_JSON).write_text('{"format": 1, "trials": [')
    result = invoke("show", sweep)
    assert result.exit_code == 0, result.output
    assert "sweep.json: unreadable (JSONDecodeError)" in result.stdout
    assert layout.read_sweep(sweep) is None


def test_read_sweep_reads_what_it_knows_and_keeps_the_rest(tmp_path):
    sweep = make_sweep(tmp_path, trials=grid([2.5, 2.1]))
    data = json.loads((sweep / layout.SWEEP_JSON).read_text())
    data["trials"][0]["objective"] = "not a number"
    data["future"] = {"x": 1}
    (sweep / layout.SWEEP_JSON).write_text(json.dumps(data))
    read = layout.read_sweep(sweep)
    assert read.to_dict() == data
    assert read.trial_list()[0].objective is None and read.trial_list()[1].objective == 2.1
    assert read.objective.metric == "val_mae" and read.best.trial == "t001"
    assert layout.read_sweep(tmp_path / "nowhere") is None


# --------------------------------------------------------------------------- compare
def test_a_sweep_folder_is_not_a_run_folder(tmp_path):
    sweep = make_sweep(tmp_path / "runs", trials=grid([2.5, 2.1]))
    trial_runs = sorted((sweep / layout.TRIALS_DIR).iterdir())
    assert not runs.is_run_folder(sweep) and runs.is_sweep_folder(sweep)
    assert runs.find_runs([tmp_path / "runs"]) == trial_runs
    assert runs.find_runs([sweep]) == trial_runs
    assert runs.sweep_of(trial_runs[0]) == sweep and runs.sweep_of(sweep) is None


def test_a_new_sweep_without_trials_is_no_run_either(tmp_path):
    sweep = tmp_path / "20260101T000000Z-boston-sweep-abcdef"
    sweep.mkdir()
    runs.write_json(sweep / layout.STATUS, {"status": "running", "command": "sweep"})
    runs.write_json(sweep / layout.ENVIRONMENT, {"python": "3.11"})
    (sweep / layout.SWEEP_CONFIG).write_text("name: boston\n")
    assert runs.find_runs([tmp_path]) == []
    result = invoke("compare", sweep)
    assert result.exit_code == 1
    assert "a sweep folder without trial run folders yet" in stderr_of(result)


def test_a_project_folder_with_a_config_named_sweep_yaml_is_searched_as_usual(tmp_path):
    (tmp_path / layout.SWEEP_CONFIG).write_text("name: boston\nsearch: {space: {training.epochs: [1, 2]}}\n")
    run = make_run(tmp_path / "runs", "plain")
    assert not runs.is_sweep_folder(tmp_path)
    assert runs.find_runs([tmp_path]) == [run]


def test_compare_a_sweep_folder_lists_its_trials(tmp_path):
    sweep = make_sweep(tmp_path, trials=grid([2.5, 2.1, 2.9, 2.3]))
    result = invoke("compare", sweep)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert f"4 runs; all have sweep {sweep.name[17:]}" in " ".join(text.split())
    for trial in ("t000", "t001", "t002", "t003"):
        assert f"boston-{trial}" in text
    assert set(report.compare([sweep]).config_columns) == {UNITS, LR}  # the varied parameters
    rows = list(csv.DictReader(io.StringIO(invoke("compare", sweep, "--format", "csv").stdout)))
    assert [row["sweep"] for row in rows] == [sweep.name] * 4
    assert [row["val_best"] for row in rows] == ["2.5", "2.1", "2.9", "2.3"]


def test_compare_runs_groups_a_sweeps_trials_under_it(tmp_path):
    root = tmp_path / "runs"
    before = make_run(root, "first")
    sweep = make_sweep(root, trials=grid([2.5, 2.1, 2.9]))
    trials = sorted((sweep / layout.TRIALS_DIR).iterdir())
    during = runs.read_run(trials[1]).status_data["started"]
    between = make_run(root, "during", started=during)  # started while the sweep ran: after it, not inside
    after = make_run(root, "after", started="2026-12-31T00:00:00Z")
    comparison = report.compare([root])
    assert [r.path for r in comparison.rows] == [before, *trials, between, after]
    assert "sweep" in comparison.columns
    assert [r.fields["sweep"] for r in comparison.rows].count(sweep.name) == 3
    text = render(report.table(comparison), width=140)
    lines = [line for line in text.splitlines() if "boston-t00" in line]
    assert len(lines) == 3 and all(sweep.name[17:] in line for line in lines)
    assert sweep not in [r.path for r in comparison.rows]
    result = invoke("compare", root, "--where", f"sweep={sweep.name}", "--format", "json")
    assert result.exit_code == 0, result.output
    assert [item["run"] for item in json.loads(result.stdout)] == [t.name for t in trials]


def test_compare_without_sweeps_has_no_sweep_column(tmp_path):
    make_run(tmp_path, "a")
    make_run(tmp_path, "b", training__batch_size=8)
    comparison = report.compare([tmp_path])
    assert "sweep" not in comparison.columns
    assert "sweep" not in render(report.table(comparison))


def test_an_interrupted_trial_points_at_its_sweep(tmp_path):
    trials = grid([2.5, None])
    trials[1]["status"] = "interrupted"
    sweep = make_sweep(tmp_path, trials=trials, status="interrupted")
    result = invoke("compare", sweep)
    assert result.exit_code == 0, result.output
    assert f"finish its sweep with: kexp sweep --resume {sweep}" in " ".join(stderr_of(result).split())
    trial = next((sweep / layout.TRIALS_DIR).glob("*-t001-*"))
    flat = " ".join(render(report.show(trial), width=200).split())
    assert f"sweep a trial of {sweep}" in flat and f"resume kexp sweep --resume {sweep}" in flat


def test_show_and_compare_of_a_sweep_import_no_tensorflow_or_numpy(tmp_path):
    sweep = make_sweep(tmp_path, trials=grid([2.5, 2.1]))
    assert heavy_imports(["show", sweep], ["compare", sweep]) == []


# --------------------------------------------------------------------------- plots
def test_sweep_plots_draw_the_objective_per_parameter_and_the_top_curves(tmp_path):
    key = "model.layers.0.kernel_regularizer"
    choices = [None, {"name": "L2", "l2": 0.001}, {"name": "L1L2", "l1": 1e-4, "l2": 1e-4}]
    trials = [{"params": {LR: lr, key: reg}, "objective": 2.0 + 0.1 * i + (0.3 if reg is None else 0)}
              for i, (lr, reg) in enumerate((lr, reg) for lr in (1e-4, 1e-3, 1e-2) for reg in choices)]
    trials[4].update(objective=None, status="failed", error="NaN")
    sweep = make_sweep(tmp_path, trials=trials, seeds=2)
    written = plots.sweep_plots(sweep)
    folder = sweep / layout.PLOTS_DIR
    assert written == [folder / f"objective-{LR}.png", folder / f"objective-{key}.png", folder / "top-trials.png"]
    for path in written:
        assert_png_plot(path)


def test_sweep_plots_of_a_one_parameter_sweep(tmp_path):
    sweep = make_sweep(tmp_path, trials=[{"params": {UNITS: u}, "objective": 3.0 - u / 100} for u in (8, 16, 32)])
    assert [p.name for p in plots.sweep_plots(sweep)] == [f"objective-{UNITS}.png", "top-trials.png"]


@pytest.mark.parametrize("damage", ["no sweep.json", "garbage sweep.json", "no trial scored", "trials deleted",
                                    "plots is a file", "not a folder"])
def test_sweep_plots_never_raise_on_a_damaged_sweep(tmp_path, damage):
    sweep = make_sweep(tmp_path, trials=grid([2.5, 2.1] if damage != "no trial scored" else [None, None]))
    expected: list[str] = []
    if damage == "no sweep.json":
        (sweep / layout.SWEEP_JSON).unlink()
    elif damage == "garbage sweep.json":
        (sweep / layout.SWEEP_JSON).write_bytes(b"\xff\x00[1, 2")
    elif damage == "trials deleted":
        for history in (sweep / layout.TRIALS_DIR).rglob("history.csv"):
            history.unlink()
        expected = [f"objective-{LR}.png"]  # no curves: no top-trials plot
    elif damage == "plots is a file":
        (sweep / layout.PLOTS_DIR).write_text("a file where the folder should be")
    elif damage == "not a folder":
        sweep = sweep / layout.SWEEP_JSON
    assert [p.name for p in plots.sweep_plots(sweep)] == expected


def test_a_stack_of_layers_reads_as_its_shape_in_the_leaderboard():
    from kexp.report.sweep import param_text

    dense = {"layer": "Dense", "units": 16, "activation": "relu"}
    regularized = {**dense, "kernel_regularizer": {"name": "L2", "l2": 0.001}}
    assert param_text([dense, dense, {"layer": "Dense", "units": 1, "activation": "sigmoid"}]) == "16-16-1"
    assert param_text([regularized, {"layer": "Dropout", "rate": 0.5}, {"layer": "Dense", "units": 1}]) == \
        "16+L2=0.001-d0.5-1"
    assert param_text([{"layer": "Flatten"}, {"layer": "Dense", "units": 10}]) == "Flatten-10"
    assert param_text({"name": "L2", "l2": 0.001}) == "L2(l2=0.001)"  # not a stack: as before
