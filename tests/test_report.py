"""kexp.report and the `compare` / `show` commands, on run folders fabricated here (no training)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import BOSTON, assert_png_plot, heavy_imports, holdout_metrics, kfold_metrics, make_run, render
from typer.testing import CliRunner

from kexp import report, runs
from kexp.cli import app
from kexp.errors import RunError, UsageError
from kexp.report import query


def parse_csv(text: str) -> list[dict]:
    """CSV cells back to values: empty -> None, true/false, int, float, else str."""
    def value(cell: str):
        if cell == "":
            return None
        if cell in ("true", "false"):
            return cell == "true"
        for kind in (int, float):
            try:
                return kind(cell)
            except ValueError:
                pass
        return cell

    return [{k: value(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]


@pytest.fixture
def reuters_pair(tmp_path: Path) -> Path:
    """The Reuters 64-unit run and the 4-unit bottleneck run (smaller batch, no final retrain)."""
    make_run(tmp_path, "reuters", metrics=holdout_metrics(val_acc=0.80, val_loss=0.88))
    make_run(tmp_path, "reuters_bottleneck", model__layers__1__units=4, training__batch_size=128,
             validation__final=None, metrics=holdout_metrics(val_acc=0.71, val_loss=1.30, test_acc=0.69))
    return tmp_path


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


# --------------------------------------------------------------------------- differing columns
def test_flatten_names_nested_and_list_keys_by_dotted_path():
    flat = report.flatten({"model": {"layers": [{"units": 64}, {"units": 4}]}, "a": {"b": None, "c": []}})
    assert flat == {"model.layers.0.units": 64, "model.layers.1.units": 4, "a.b": None, "a.c": "[]"}


def test_differing_keys_show_only_config_values_that_differ(reuters_pair):
    comparison = report.compare([reuters_pair])
    assert comparison.config_columns == ["model.layers.1.units", "training.batch_size", "validation.final.epochs"]
    assert "name" not in comparison.columns  # the run column already names it
    values = comparison.values()
    assert [v["model.layers.1.units"] for v in values] == [64, 4]
    assert [v["training.batch_size"] for v in values] == [512, 128]
    assert [v["validation.final.epochs"] for v in values] == [9, None]
    assert "dataset.num_words" not in comparison.columns  # equal in both


def test_differing_keys_treat_a_missing_key_as_null(tmp_path):
    make_run(tmp_path, "a", validation__final=None)
    make_run(tmp_path, "b")
    del_final = report.compare([tmp_path]).config_columns
    assert del_final == ["validation.final.epochs"]  # validation.final: missing vs null is no difference


def test_differing_keys_compare_numbers_by_value_and_booleans_as_booleans(tmp_path):
    make_run(tmp_path, "a", training__epochs=20, training__shuffle=True, validation__size=1)
    make_run(tmp_path, "b", training__epochs=20.0, training__shuffle=1, validation__size=1.0)
    # 20 == 20.0 (a YAML float is the same setting), but true is not the number 1
    assert report.compare([tmp_path]).config_columns == ["training.shuffle"]


def test_a_single_run_has_no_config_columns(tmp_path):
    make_run(tmp_path, "only")
    comparison = report.compare([tmp_path])
    assert comparison.config_columns == []
    assert comparison.columns[:5] == ["run", "command", "dataset", "scheme", "status"]


def test_table_is_readable_at_100_columns(reuters_pair):
    text = render(report.table(report.compare([reuters_pair])))
    lines = text.splitlines()
    assert all(len(line) <= 100 for line in lines), text
    assert "reuters_bottleneck" in text.replace("\n", "")
    assert "model." in text and "layers.1." in text and "units" in text
    assert "validation.final.epochs" in report.to_csv(report.compare([reuters_pair]))
    assert "0.8" in text and "0.71" in text and "+0.44" in text


def test_table_with_many_differing_keys_shows_what_fits_and_names_the_rest(tmp_path):
    make_run(tmp_path, "reuters")
    make_run(tmp_path, "boston", config=BOSTON)
    comparison = report.compare([tmp_path])
    assert len(comparison.config_columns) > 10
    assert "dataset.name" not in comparison.config_columns  # the dataset column shows it
    text = render(report.table(comparison))
    assert all(len(line) <= 100 for line in text.splitlines()), text

    def config_headers(width: int) -> list[str]:
        layout = report.table(comparison).layout(width)
        return [c for c in layout.columns if c in comparison.config_columns]

    shown = config_headers(100)
    assert shown == comparison.config_columns[: len(shown)]
    hidden = comparison.config_columns[len(shown):]
    assert hidden
    assert f"{len(hidden)} more config keys differ (too wide to show): {hidden[0]}" in " ".join(text.split())
    assert len(config_headers(200)) > len(shown)  # a wider console shows more of them
    assert "metric" in text  # the runs differ in main metric, so it gets a column
    assert len(report.to_csv(comparison).splitlines()[0].split(",")) > len(report.DEFAULT_COLUMNS) + 10


def test_table_says_shared_values_once(reuters_pair):
    layout = report.table(report.compare([reuters_pair])).layout(100)
    assert layout.title == ("2 runs; all have command train, dataset reuters, scheme holdout, status completed, "
                            "metric accuracy")
    assert layout.columns[:2] == ["run", "epochs"]
    assert layout.note is None and layout.hidden == []


# --------------------------------------------------------------------------- sorting, filtering, last
@pytest.fixture
def three_runs(tmp_path: Path) -> Path:
    make_run(tmp_path, "mid", metrics=holdout_metrics(val_acc=0.75, val_loss=1.0, total_s=30))
    make_run(tmp_path, "good", training__batch_size=128, metrics=holdout_metrics(val_acc=0.82, val_loss=0.8))
    make_run(tmp_path, "bad", training__epochs=4, metrics=holdout_metrics(val_acc=0.60, val_loss=1.5, total_s=5))
    return tmp_path


def names(comparison: report.Comparison) -> list[str]:
    return [report.run_label(r.name).rsplit("-", 1)[0] for r in comparison.records]


def test_default_order_is_oldest_first(three_runs):
    assert names(report.compare([three_runs])) == ["mid", "good", "bad"]


def test_sort_by_a_score_defaults_to_descending(three_runs):
    assert names(report.compare([three_runs], sort="val_best")) == ["good", "mid", "bad"]
    assert names(report.compare([three_runs], sort="val_accuracy")) == ["good", "mid", "bad"]


def test_sort_by_a_loss_like_metric_defaults_to_ascending(three_runs):
    assert names(report.compare([three_runs], sort="val_loss")) == ["good", "mid", "bad"]
    assert names(report.compare([three_runs], sort="loss@final")) == ["good", "mid", "bad"]
    assert names(report.compare([three_runs], sort="duration")) == ["bad", "mid", "good"]


def test_sort_direction_can_be_forced(three_runs):
    assert names(report.compare([three_runs], sort="val_loss", ascending=False)) == ["bad", "mid", "good"]
    assert names(report.compare([three_runs], sort="val_best", ascending=True)) == ["bad", "mid", "good"]


def test_sort_by_config_key_puts_runs_without_a_value_last(three_runs, tmp_path):
    make_run(tmp_path, "nocfg", metrics=holdout_metrics(val_acc=0.9))
    for name in ("config.yaml", "config.json"):
        (next(tmp_path.glob("*-nocfg-*")) / name).unlink()
    order = names(report.compare([three_runs], sort="training.epochs"))
    assert order[0] == "bad" and order[-1] == "nocfg"
    order = names(report.compare([three_runs], sort="training.epochs", ascending=False))
    assert order[-1] == "nocfg"


def test_sort_by_unknown_key_is_a_usage_error(three_runs):
    with pytest.raises(UsageError, match=r"training\.epochs"):
        report.compare([three_runs], sort="training.epoch")


def test_where_filters_on_fields_and_config_keys(three_runs):
    assert names(report.compare([three_runs], where=["training.batch_size=128"])) == ["good"]
    assert names(report.compare([three_runs], where=["dataset=reuters", "training.epochs=20"])) == ["mid", "good"]
    assert names(report.compare([three_runs], where=["status=completed", "name=bad"])) == ["bad"]
    assert names(report.compare([three_runs], where=["training.shuffle=true", "validation.seed=null"])) == [
        "mid", "good", "bad"]


def test_where_compares_numbers_as_numbers(three_runs):
    assert names(report.compare([three_runs], where=["training.epochs=4.0"])) == ["bad"]


def test_where_that_matches_nothing_says_so(three_runs):
    with pytest.raises(RunError, match="3 runs found, none match --where dataset=imdb"):
        report.compare([three_runs], where=["dataset=imdb"])


@pytest.mark.parametrize("item, message", [("training.batch_size", "expected KEY=VALUE"),
                                           ("trainig.epochs=3", r"did you mean training\.epochs")])
def test_malformed_or_unknown_where_is_a_usage_error(three_runs, item, message):
    with pytest.raises(UsageError, match=message):
        report.compare([three_runs], where=[item])


def test_last_keeps_the_most_recent_runs(tmp_path):
    make_run(tmp_path, "new", started="2026-03-01T00:00:00Z")
    make_run(tmp_path, "old", started="2026-01-01T00:00:00Z")
    make_run(tmp_path, "mid", started="2026-02-01T00:00:00Z")
    assert names(report.compare([tmp_path], last=2)) == ["mid", "new"]
    assert names(report.compare([tmp_path], last=2, where=["name=old"])) == ["old"]


def test_columns_choose_and_order(three_runs):
    comparison = report.compare([three_runs], columns="val_loss,run,training.epochs,test_accuracy")
    assert comparison.columns == ["val_loss", "run", "training.epochs", "test_accuracy"]
    assert comparison.values()[2] == {"val_loss": 1.5, "run": comparison.records[2].name,
                                      "training.epochs": 4, "test_accuracy": 0.78}


# --------------------------------------------------------------------------- output formats
def test_csv_and_json_parse_back_to_the_same_values(three_runs, tmp_path):
    make_run(tmp_path, "boston", config=BOSTON)
    comparison = report.compare([tmp_path])
    from_json = json.loads(report.to_json(comparison))
    assert from_json == comparison.values()
    assert parse_csv(report.to_csv(comparison)) == from_json
    boston = from_json[-1]
    assert boston["val_best"] == 2.4 and boston["val_best_std"] == 0.0816  # K-fold mean and std
    assert isinstance(from_json[0]["epochs"], int) and isinstance(from_json[0]["val_best"], float)
    assert from_json[0]["val_best_std"] is None


def test_markdown_is_a_pipe_table_with_one_line_per_run(three_runs):
    text = report.markdown(report.compare([three_runs]))
    lines = text.splitlines()
    assert len(lines) == 2 + 3
    assert all(line.startswith("| ") and line.endswith(" |") for line in lines[:1] + lines[2:])
    assert set(lines[1]) <= set("|-:")
    assert lines[0].count("|") == lines[3].count("|")


def test_kfold_metrics_show_mean_and_std(tmp_path):
    make_run(tmp_path, "boston", config=BOSTON)
    text = render(report.table(report.compare([tmp_path])))
    assert "2.4±0.082" in text
    assert "kfold" in text


# --------------------------------------------------------------------------- partial and corrupt folders
def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    make_run(tmp_path, "done")
    truncated = make_run(tmp_path, "truncated")
    text = (truncated / "metrics.json").read_text()
    (truncated / "metrics.json").write_text(text[: len(text) // 2])
    no_status = make_run(tmp_path, "nostatus")
    (no_status / "status.json").unlink()
    make_run(tmp_path, "killed", status="running", pid=dead_pid(), metrics=None)
    make_run(tmp_path, "live", status="running", pid=os.getpid(), metrics={"command": "train"})
    make_run(tmp_path, "failed", status="failed", metrics=None)
    make_run(tmp_path, "stopped", status="interrupted", history=False)
    garbage = tmp_path / "20260101T000000Z-garbage-ffffff"
    garbage.mkdir()
    (garbage / "status.json").write_text('{"status": "compl')
    return tmp_path


def test_partial_and_corrupt_folders_are_listed_with_their_status(messy):
    comparison = report.compare([messy])
    status = {report.run_label(r.record.name).rsplit("-", 1)[0]: r.fields["status"] for r in comparison.rows}
    assert status == {"done": "completed", "truncated": "completed", "nostatus": "unknown",
                      "killed": "incomplete", "live": "running", "failed": "failed", "stopped": "interrupted"}
    joined = "\n".join(comparison.warnings)
    assert "metrics.json: unreadable" in joined and "status.json: missing" in joined
    assert "garbage-ffffff: skipped, nothing readable (status.json: unreadable" in joined
    for fmt in report.FORMATS:  # every format shows every readable run with its status, one row each
        rendered = report.render(comparison, fmt)
        text = rendered if isinstance(rendered, str) else render(rendered, width=250)
        flat = "".join(text.split())
        for name, state in status.items():
            assert name in flat and state in flat, (fmt, name, state, text)
        assert "garbage-ffffff" not in flat, fmt
    assert len(json.loads(report.render(comparison, "json"))) == len(status)
    assert len(parse_csv(report.render(comparison, "csv"))) == len(status)


def test_compare_command_survives_messy_folders(messy):
    result = invoke("compare", messy)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "incomplete" in result.stdout and "interrupted" in result.stdout
    assert "warning:" in result.stderr and "metrics.json: unreadable" in result.stderr
    assert all(line.startswith("warning: ") for line in result.stderr.splitlines())


def test_a_folder_with_nothing_readable_is_skipped_with_a_warning(tmp_path):
    make_run(tmp_path, "good")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "status.json").write_text("{")
    (broken / "config.yaml").write_text("a: [")
    comparison = report.compare([tmp_path])
    assert [r.name for r in comparison.records] == [next(tmp_path.glob("*-good-*")).name]
    assert any("broken: skipped" in w for w in comparison.warnings)


def test_no_runs_is_an_error_with_exit_code_1(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="no kexp run folders found"):
        report.compare([tmp_path / "empty"])
    result = invoke("compare", tmp_path / "empty")
    assert result.exit_code == 1, result.output
    assert "no kexp run folders found" in result.stderr


def test_a_missing_path_is_refused_by_the_command(tmp_path):
    result = invoke("compare", tmp_path / "nope")
    assert result.exit_code == 2, result.output
    message = "".join(result.stderr.replace("│", " ").split())  # the text inside Click's box, unwrapped
    assert "".join(f"Path '{tmp_path / 'nope'}' does not exist".split()) in message, result.stderr
    assert result.stdout == ""


# --------------------------------------------------------------------------- the commands
def test_compare_command_prints_one_table(reuters_pair):
    result = invoke("compare", reuters_pair)
    assert result.exit_code == 0, result.output
    assert result.stdout.count("reuters_bottleneck") == 1
    assert "status" in result.stdout and result.stderr == ""


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_compare_command_machine_formats_parse(reuters_pair, fmt):
    result = invoke("compare", reuters_pair, "--format", fmt, "--sort", "val_best", "--where", "dataset=reuters")
    assert result.exit_code == 0, result.output
    rows = parse_csv(result.stdout) if fmt == "csv" else json.loads(result.stdout)
    assert [r["model.layers.1.units"] for r in rows] == [64, 4]
    assert rows[0]["val_best"] == 0.8 and math.isclose(rows[0]["margin"], 0.8 - 0.36)


def test_compare_command_reports_usage_errors_without_traceback(reuters_pair):
    result = invoke("compare", reuters_pair, "--where", "nope=1")
    assert result.exit_code == 2, result.output
    assert "--where: nope" in result.stderr and "Traceback" not in result.output


def test_compare_command_writes_a_plot(reuters_pair, tmp_path):
    target = tmp_path / "out" / "acc.png"
    result = invoke("compare", reuters_pair, "--plot", "accuracy", "--output", target, "--format", "json")
    assert result.exit_code == 0, result.output
    assert_png_plot(target)
    json.loads(result.stdout)  # the "wrote" line goes to stderr
    assert "wrote" in result.stderr


def test_compare_imports_no_tensorflow(reuters_pair):
    assert heavy_imports(["compare", reuters_pair, "--format", "json"], ["show", next(reuters_pair.iterdir())]) == []


def test_show_holdout_run_in_full(reuters_pair):
    path = next(reuters_pair.glob("*-reuters-*"))
    text = render(report.show(path))
    for part in ("completed", "val@best", "accuracy", "majority_accuracy 0.36", "beats the baseline",
                 "lowest at epoch 9", "config (resolved)", "units: 64", "metrics.json", "plots" if
                 (path / "plots").exists() else "history.csv"):
        assert part in text, part
    assert all(len(line) <= 100 for line in text.splitlines())


def test_show_kfold_run_has_the_fold_table(tmp_path):
    path = make_run(tmp_path, "boston", config=BOSTON)
    result = invoke("show", path)
    assert result.exit_code == 0, result.output
    assert "folds (3)" in result.stdout and "r0-f2" in result.stdout and "2.4000 ± 0.082" in result.stdout
    assert "folds/" in result.stdout


def test_show_partial_run(tmp_path):
    path = make_run(tmp_path, "killed", status="running", pid=dead_pid(), metrics=None)
    result = invoke("show", path)
    assert result.exit_code == 0, result.output
    assert "incomplete" in result.stdout and "history.csv" in result.stdout


def test_show_refuses_a_folder_that_is_not_a_run(tmp_path):
    result = invoke("show", tmp_path)
    assert result.exit_code == 1, result.output
    assert "not a kexp run folder" in result.stderr


def test_cells_wider_than_their_column_fold_onto_more_lines(tmp_path):
    make_run(tmp_path, "a_rather_long_experiment_name_that_will_not_fit")
    make_run(tmp_path, "b", training__batch_size=8)
    text = render(report.table(report.compare([tmp_path])), width=60)
    assert all(len(line) <= 60 for line in text.splitlines()), text
    assert "a_rather_long_experiment_name_that_will_not_fit" in "".join(
        line.split(" ")[0] for line in text.splitlines())


def test_a_table_of_500_runs_has_one_line_per_run(tmp_path):
    make_run(tmp_path, "a")
    make_run(tmp_path, "b", training__batch_size=8)
    comparison = report.compare([tmp_path])
    comparison.rows = comparison.rows * 250
    lines = render(report.table(comparison)).splitlines()
    assert len(lines) == 500 + 4  # title, two header lines, rule
    firsts = [line.split()[0] for line in lines[4:]]
    assert sorted(set(firsts)) == sorted(set(firsts[:2])) and firsts.count(firsts[0]) == 250


def test_wide_characters_fold_by_their_display_width(tmp_path):
    make_run(tmp_path, "実験" * 20)  # 2 cells per character: 80 cells
    make_run(tmp_path, "b", training__batch_size=8)
    text = render(report.table(report.compare([tmp_path])), width=60)
    from rich.cells import cell_len

    assert all(cell_len(line) <= 60 for line in text.splitlines()), text
    assert "".join(line.split(" ")[0] for line in text.splitlines()).count("実験") == 20


def test_last_reads_only_the_newest_folders(tmp_path, monkeypatch):
    for month in range(1, 31):
        make_run(tmp_path, f"m{month:02d}", started=f"2026-01-{month:02d}T00:00:00Z")
    read = []
    original = runs.read_run
    monkeypatch.setattr(runs, "read_run", lambda path: read.append(path) or original(path))
    assert names(report.compare([tmp_path], last=3)) == ["m28", "m29", "m30"]
    assert len(read) == 3 + query._SLACK


def test_text_that_looks_like_rich_markup_is_shown_as_is(tmp_path):
    path = make_run(tmp_path, "a", status="failed", training__callbacks=[{"name": "[/oops]"}])
    status = json.loads((path / "status.json").read_text())
    runs.write_json(path / "status.json", dict(status, error="ValueError: shape [bold](None, 3)[/]"))
    make_run(tmp_path, "b")
    result = invoke("compare", tmp_path, "--columns", "run,training.callbacks.0.name")
    assert result.exit_code == 0, result.output
    assert "[/oops]" in result.stdout
    result = invoke("show", path)
    assert result.exit_code == 0, result.output
    assert "shape [bold](None, 3)[/]" in result.stdout


def test_keys_that_differ_within_a_dataset_come_first_and_always_show(reuters_pair):
    make_run(reuters_pair, "boston", config=BOSTON, metrics=kfold_metrics())
    comparison = report.compare([reuters_pair])
    assert comparison.config_columns[0] == "model.layers.1.units"
    assert comparison.config_columns.index("training.batch_size") < comparison.config_columns.index(
        "preprocessing.standardize")
    text = render(report.table(comparison), width=100)
    assert "units" in text and "too wide to show" in text


def test_chance_column_is_random_guessing_accuracy(tmp_path):
    metrics = holdout_metrics()
    metrics["baseline"]["validation"] = {"majority_accuracy": 0.36, "random_accuracy": 0.19}
    make_run(tmp_path, "reuters", metrics=metrics)
    (row,) = report.compare([tmp_path]).values()
    assert row["chance"] == 0.19 and row["baseline"] == metrics["baseline"]["value"]
