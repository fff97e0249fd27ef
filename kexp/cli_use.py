"""`kexp` commands that use a finished run: predict, evaluate, export; and the config's JSON Schema."""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from kexp.cli_shared import PluginsOpt, app, check_backend, err, fail, out, raise_usage_error
from kexp.errors import KexpError

# ---- using a run

RunArg = Annotated[Path, typer.Argument(help="A run folder (its model.keras and preprocessing.json).", exists=True,
                                        file_okay=False)]
DataArg = Annotated[str, typer.Argument(
    help="A CSV or NPZ file in the training data's format, or NAME:SPLIT for the run's dataset (iris:test).")]


@app.command()
def predict(
    run: RunArg,
    data: DataArg,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", dir_okay=False, help="Write the predictions to this CSV file (default: CSV on stdout).")]
    = None,
    plugins: PluginsOpt = None,
) -> None:
    """Predict with a run's final model, preprocessing DATA exactly as the model's training data was:
    class id, class name and one probability per class, or the value; columns per output."""
    from kexp.predict import predict as predicting

    try:
        check_backend()
        result = predicting(run, data, plugins=plugins or [])
        if output is None:
            result.to_csv(sys.stdout)
            sys.stdout.flush()
            return
        result.to_csv(output)
    except KexpError as error:
        fail(error)
    except BrokenPipeError:  # `kexp predict RUN DATA | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        raise typer.Exit(0) from None
    except OSError as exc:
        err.print(f"--output: {output}: cannot write: {exc.strerror}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    from rich.table import Table

    table = Table(*result.columns, title=f"{len(result)} predictions (the first {min(5, len(result))})")
    for row in result.rows(5):
        table.add_row(*row)
    out.print(table)
    out.print(f"wrote {output}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def evaluate(
    run: RunArg,
    data: DataArg,
    plugins: PluginsOpt = None,
) -> None:
    """A run's final model's metrics (its compiled loss and metrics) on labelled DATA."""
    from kexp.predict import evaluate as evaluating

    try:
        check_backend()
        result = evaluating(run, data, plugins=plugins or [])
    except KexpError as error:
        fail(error)
    width = max(map(len, result.metrics))
    out.print(f"{result.n_samples} samples of {data}", markup=False, highlight=False, soft_wrap=True)
    for metric, value in result.metrics.items():
        out.print(f"{metric:<{width}}  {value:.6g}", markup=False, highlight=False)


# ---- export and editor help


class ExportTarget(str, Enum):
    tensorboard = "tensorboard"
    mlflow = "mlflow"


@app.command()
def export(
    paths: Annotated[list[Path], typer.Argument(
        help="Run folders, sweep folders, or folders searched recursively for them.", exists=True,
        metavar="RUN_OR_SWEEP...")],
    to: Annotated[ExportTarget, typer.Option("--to", help="Where to: TensorBoard event files, or MLflow runs.")],
    folder: Annotated[Path | None, typer.Option(
        "--dir", file_okay=False, help="--to tensorboard: the folder to write (read it with tensorboard --logdir "
                                       "DIR); a run exported before is rewritten.")] = None,
    tracking_uri: Annotated[str | None, typer.Option(
        "--tracking-uri", help="--to mlflow: a tracking server (http://host:5000) or store (sqlite:///mlflow.db); "
                               "default: $MLFLOW_TRACKING_URI, else ./mlflow.db.")] = None,
    experiment: Annotated[str, typer.Option(
        "--experiment", help="--to mlflow: the MLflow experiment (created when missing).")] = "kexp",
) -> None:
    """Export runs and sweeps to TensorBoard or MLflow: per-epoch metrics, the flattened config as
    hyperparameters, final metrics; a sweep's trials under it. Exporting again updates, never duplicates."""
    from kexp import export as exporting

    try:
        if to is ExportTarget.tensorboard:
            given = [opt for opt, value in (("--tracking-uri", tracking_uri), ("--experiment", experiment != "kexp"))
                     if value]
            if given or folder is None:
                raise_usage_error(f"{', '.join(given)}: only --to mlflow uses them" if given else
                                  "--to tensorboard needs --dir DIR, the folder to write event files to")
            result = exporting.to_tensorboard(paths, folder)
            view = f"tensorboard --logdir {result.where}"
        else:
            if folder is not None:
                raise_usage_error("--dir: only --to tensorboard uses it; --to mlflow logs to --tracking-uri")
            os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # not MLflow's INFO lines about its tables
            result = exporting.to_mlflow(paths, tracking_uri, experiment)
            view = (f"mlflow ui --backend-store-uri {result.where}" if not result.where.startswith(("http:", "https:"))
                    else result.where)
        for line in result.warnings:
            err.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)
        for item in result.items:
            out.print(f"{item.kind} {item.source} -> {item.target} ({item.action})", markup=False, highlight=False,
                      soft_wrap=True)
        where = f"{result.where} (experiment {result.experiment})" if result.experiment else result.where
        out.print(f"exported {len(result.items)} folders to {where}; view with: {view}", markup=False, highlight=False,
                  soft_wrap=True)
    except KexpError as error:
        fail(error)


@app.command()
def schema() -> None:
    """Print the JSON Schema of a config (keys, defaults, descriptions) for editors: kexp schema > kexp.schema.json,
    then point your YAML language server at it (see README: Editor help)."""
    from kexp.schema import schema_text

    sys.stdout.write(schema_text())
    sys.stdout.flush()
