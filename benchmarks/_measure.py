"""Run a command as a child process and report its wall time and peak memory (whole process)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"  # ../shared from the checkout


def measure(cmd: list[str], env: dict | None = None) -> dict:
    """Wall seconds, peak RSS (MiB, the largest process of the command) and the last stdout line."""
    wrapper = (
        "import json, resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "wall = time.perf_counter() - t\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(json.dumps({'rc': done.returncode, 'wall_s': wall, 'peak_mib': peak,"
        " 'stdout': done.stdout, 'stderr': done.stderr[-4000:]}))\n"
    )
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result['stderr']}")
    return result


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def run_metrics(runs_dir: str):
    """The metrics (kexp.layout.Metrics) of the newest run folder in runs_dir, read through the contract."""
    from kexp.layout import read_metrics

    folders = sorted(p for p in os.listdir(runs_dir) if not p.startswith("."))
    return read_metrics(os.path.join(runs_dir, folders[-1]))


def arguments(doc: str) -> argparse.ArgumentParser:
    """A benchmark's argument parser with the options every benchmark has: where the classic datasets
    and the hand-written reference scripts are."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(SHARED / "datasets"))
    parser.add_argument("--reference", default=str(SHARED / "reference"))
    return parser
