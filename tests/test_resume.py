"""`kexp kfold --resume RUN`: finishes an interrupted K-fold run and touches nothing else."""

import hashlib
import json
from pathlib import Path

import pytest
from cli_runner import invoke, stderr_of

KFOLD = ["--set", "validation={scheme: kfold, n_splits: 2, final: {epochs: 1}}", "--set", "training.epochs=1"]


def snapshot(folder: Path) -> dict:
    """Every file of a folder with its content hash and modification time."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def only_run(runs_dir: Path) -> Path:
    folders = [p for p in runs_dir.iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


@pytest.fixture
def completed_kfold(tiny_config, tmp_path):
    result = invoke("kfold", tiny_config, *KFOLD, "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    run = only_run(tmp_path / "runs")
    assert json.loads((run / "status.json").read_text())["status"] == "completed"
    return run


def test_resuming_a_completed_run_says_so_and_changes_nothing(completed_kfold):
    before = snapshot(completed_kfold)
    result = invoke("kfold", "--resume", completed_kfold, "--quiet")
    assert result.exit_code == 0, result.output
    assert "already complete" in result.output and "nothing to resume" in result.output, result.output
    assert snapshot(completed_kfold) == before


def test_resume_refuses_set_and_name_instead_of_ignoring_them(completed_kfold):
    before = snapshot(completed_kfold)
    for extra in (["--set", "training.epochs=5"], ["--name", "other"]):
        result = invoke("kfold", "--resume", completed_kfold, *extra)
        assert result.exit_code == 2, result.output
        err = stderr_of(result)
        assert extra[0] in err and "--resume" in err and "config.yaml" in err, err
    assert snapshot(completed_kfold) == before


def test_resume_refuses_runs_dir(completed_kfold, tmp_path):
    result = invoke("kfold", "--resume", completed_kfold, "--runs-dir", tmp_path / "elsewhere")
    assert result.exit_code == 2, result.output
    assert "--runs-dir" in stderr_of(result)
    assert not (tmp_path / "elsewhere").exists()


def test_resume_of_a_holdout_run_says_it_is_a_holdout_run(tiny_config, tmp_path):
    result = invoke("train", tiny_config, "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    run = only_run(tmp_path / "runs")
    before = snapshot(run)
    result = invoke("kfold", "--resume", run, "--quiet")
    assert result.exit_code == 2, result.output
    err = stderr_of(result)
    assert "hold-out run" in err and "only K-fold runs can be resumed" in err, err
    assert "validation.scheme" not in err, err
    assert snapshot(run) == before


def test_an_interrupted_run_is_resumed_and_completed(completed_kfold):
    """The case --resume exists for still works: the missing fold and the final model are made."""
    for name in ("metrics.json", "model.keras", "preprocessing.json"):
        (completed_kfold / name).unlink()
    (completed_kfold / "folds" / "r0-f1" / "metrics.json").unlink()
    status = json.loads((completed_kfold / "status.json").read_text()) | {"status": "interrupted"}
    (completed_kfold / "status.json").write_text(json.dumps(status))
    kept = snapshot(completed_kfold / "folds" / "r0-f0")
    result = invoke("kfold", "--resume", completed_kfold, "--quiet")
    assert result.exit_code == 0, result.output
    assert json.loads((completed_kfold / "status.json").read_text())["status"] == "completed"
    for name in ("metrics.json", "model.keras", "preprocessing.json", "folds/r0-f1/metrics.json"):
        assert (completed_kfold / name).is_file(), name
    assert snapshot(completed_kfold / "folds" / "r0-f0") == kept


def test_resume_refuses_a_run_whose_process_is_still_running(completed_kfold):
    import os
    import socket

    status = json.loads((completed_kfold / "status.json").read_text())
    status.update(status="running", pid=os.getpid(), host=socket.gethostname())
    (completed_kfold / "status.json").write_text(json.dumps(status))
    (completed_kfold / "folds" / "r0-f1" / "metrics.json").unlink()
    before = snapshot(completed_kfold)
    result = invoke("kfold", "--resume", completed_kfold, "--quiet")
    assert result.exit_code == 1, result.output
    assert "still running" in stderr_of(result) and str(os.getpid()) in stderr_of(result)
    assert snapshot(completed_kfold) == before
