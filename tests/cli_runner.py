"""In-process `kexp` commands for the tests: Click's runner, failing the test on any traceback."""

from __future__ import annotations

import traceback

import pytest
from typer.testing import CliRunner

runner = CliRunner()


def no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text and "Exception ignored" not in text, text


def invoke(*args):
    """Run `kexp ARGS...` (paths and numbers are passed as text); the test fails on an exception
    other than the command's exit, or on a traceback in its output."""
    from kexp.cli import app

    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        pytest.fail("".join(traceback.format_exception(result.exception)))
    no_traceback(result.output)
    return result


def stderr_of(result) -> str:
    try:
        return result.stderr
    except ValueError:  # older Click mixes the streams
        return result.output
