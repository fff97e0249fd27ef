"""What every `kexp` command shares: the Typer app, the consoles, the error exit, the backend check.
kexp.cli (training, reading runs) and kexp.cli_use (using runs: predict, evaluate, export, schema)
register their commands on `app`; kexp.cli imports both, so the entry point stays `kexp.cli:app`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
PluginsOpt = Annotated[list[Path] | None, typer.Option(
    "--plugins", dir_okay=False,
    help="Your Python file, imported first: objects it registers with keras.saving.register_keras_serializable "
         "work by name (repeatable; runs your code: see SECURITY.md).")]


def fail(error: KexpError) -> None:
    """Print a kexp error (one line per problem) on stderr and exit with its code."""
    for line in str(error).splitlines():
        err.print(line, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(error.exit_code)


def _version(value: bool) -> None:
    if value:
        from kexp import __version__

        typer.echo(f"kexp {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print kexp's version and exit.")] = False,
) -> None:
    """Run Keras experiments from YAML configs."""


def check_backend() -> None:
    """The Keras backend named by KERAS_BACKEND (else keras.json, as Keras reads them) must be one kexp
    runs on, with its package installed: otherwise importing Keras fails with a traceback deep inside it
    (commands that take a config resolve its `backend:` key instead)."""
    from kexp.backend import resolve

    resolve(None)


def raise_config_error(message: str):
    from kexp.errors import ConfigError

    raise ConfigError(message)


def raise_run_error(message: str):
    from kexp.errors import RunError

    raise RunError(message)


def raise_usage_error(message: str):
    from kexp.errors import UsageError

    raise UsageError(message)
