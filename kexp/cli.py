"""The `kexp` command line: thin commands that call the library and print its results.

Nothing here or at the top of the modules it imports loads TensorFlow: only `train` and `kfold`
(and `validate` of a well-formed config) import the experiment module, which imports Keras.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from kexp.errors import KexpError

app = typer.Typer(
    name="kexp",
    help="Run Keras experiments from YAML configs: train, K-fold, compare.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

ConfigArg = Annotated[
    Path,
    typer.Argument(help="The experiment's YAML config.", exists=True, dir_okay=False, readable=True),
]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override a key: --set training.epochs=4 (value is YAML)."),
]
RunsDirOpt = Annotated[Path, typer.Option("--runs-dir", help="Folder that receives run folders.")]
NameOpt = Annotated[Optional[str], typer.Option("--name", help="Run name (default: the config's).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]


def fail(error: KexpError) -> None:
    """Print a kexp error (one line per problem) on stderr and exit with its code."""
    for line in str(error).splitlines():
        err.print(line, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(error.exit_code)


@app.callback()
def main() -> None:
    """Run Keras experiments from YAML configs."""
