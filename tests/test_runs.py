"""Run folders: atomic writes of the files a run leaves behind (kexp/runs.py)."""

import json
import math
import os
import sys
from pathlib import Path

import pytest

from kexp import runs
from kexp.runs import atomic_write


def leftovers(folder):
    """Everything in `folder` but the files a test put there on purpose."""
    return sorted(p.name for p in folder.iterdir() if p.name != "target.json")


def test_atomic_write_replaces_the_file_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "target.json"
    target.write_text("old")
    atomic_write(target, "new text")
    assert target.read_text() == "new text"
    atomic_write(target, b"\x00bytes")
    assert target.read_bytes() == b"\x00bytes"
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_atomic_write_syncs_the_complete_new_file_beside_the_target_before_renaming(tmp_path, monkeypatch):
    target = tmp_path / "target.json"
    target.write_text("old")
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        src, dst = os.fspath(src), os.fspath(dst)
        # the old content is still in place and the new one is complete, in the same folder
        events.append(("replace", os.path.dirname(src), target.read_text(), Path(src).read_text()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write(target, "x" * 100_000)
    assert [e[0] for e in events] == ["fsync", "replace"], events
    assert os.path.dirname(events[0][1]) == str(tmp_path) and events[0][1] != str(target), "the new file is synced"
    assert events[1][1:] == (str(tmp_path), "old", "x" * 100_000)
    assert target.read_text() == "x" * 100_000


@pytest.mark.parametrize("where", ["fsync", "replace"])
@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()],
                         ids=["disk-full", "ctrl-c"])
def test_a_failed_atomic_write_keeps_the_old_file_and_removes_its_temporary_file(tmp_path, monkeypatch,
                                                                                  where, error):
    target = tmp_path / "target.json"
    target.write_text('{"old": true}')

    def fail(*args):
        raise error

    monkeypatch.setattr(os, where, fail)
    with pytest.raises(type(error)):
        atomic_write(target, '{"new": true, "half": "written"}')
    monkeypatch.undo()
    assert target.read_text() == '{"old": true}'
    assert leftovers(tmp_path) == [], "the temporary file must be removed"


def test_a_failed_first_write_leaves_no_file_at_all(tmp_path, monkeypatch):
    target = tmp_path / "target.json"

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        runs.write_json(target, {"a": 1})
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_a_history_row_is_on_disk_at_each_epoch_and_durable_when_the_split_ends(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    path = tmp_path / "history.csv"
    writer = runs.HistoryWriter(path)
    writer.append(1, {"loss": 0.5})
    writer.append(2, {"loss": 0.25})
    assert path.read_text() == "epoch,loss\n1,0.5\n2,0.25\n"  # what another process reads while it trains
    assert synced == []  # no fsync per epoch
    writer.close()
    assert synced == [str(path)]
    writer.close()
    assert synced == [str(path)]


def test_write_json_is_atomic_and_writes_nan_as_null(tmp_path, monkeypatch):
    target = tmp_path / "target.json"
    runs.write_json(target, {"a": 1})

    def fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError):
        runs.write_json(target, {"a": 2})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"a": 1}
    assert leftovers(tmp_path) == []
    runs.write_json(target, {"nan": math.nan, "inf": [math.inf, 1.5]})
    assert json.loads(target.read_text()) == {"nan": None, "inf": [None, 1.5]}


# --------------------------------------------------------------------------- mutation-testing kills (TESTING.md)
def test_write_json_is_indented_text_with_numpy_values_as_plain_json(tmp_path):
    import numpy as np

    target = tmp_path / "target.json"
    runs.write_json(target, {"a": {"b": 1}})
    assert target.read_text() == '{\n  "a": {\n    "b": 1\n  }\n}\n'
    runs.write_json(target, {"f": np.float32(0.5), "i": np.int64(3), "nan": np.float64("nan"),
                             "inf": np.float32("inf"), "zero_d": np.array(2.5)})
    text = target.read_text()
    assert "NaN" not in text and "Infinity" not in text, text
    assert json.loads(text) == {"f": 0.5, "i": 3, "nan": None, "inf": None, "zero_d": 2.5}


def test_write_json_writes_numpy_arrays_as_lists(tmp_path):
    import numpy as np

    runs.write_json(tmp_path / "target.json", {"one": np.array([1.5]), "two": np.array([1.0, 2.0])})
    assert json.loads((tmp_path / "target.json").read_text()) == {"one": [1.5], "two": [1.0, 2.0]}


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o027])
def test_atomic_write_gives_the_file_the_mode_any_new_file_gets(mask, tmp_path):
    old = os.umask(mask)
    try:
        atomic_write(tmp_path / "target.json", "x")
        assert runs.current_umask() == mask
    finally:
        os.umask(old)
    assert (tmp_path / "target.json").stat().st_mode & 0o777 == 0o666 & ~mask


def test_atomic_write_writes_a_hidden_temporary_file_beside_the_target(tmp_path, monkeypatch):
    target, names = tmp_path / "target.json", []
    real_replace = os.replace

    def replace(src, dst):
        names.append(os.path.basename(os.fspath(src)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    atomic_write(target, "x")
    (name,) = names
    assert name.startswith(".target.json.") and name.endswith(".tmp"), name


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_current_umask_reads_the_mask_without_changing_it_where_it_can(monkeypatch):
    calls, real_umask = [], os.umask
    old = real_umask(0o027)
    real_umask(old)

    def umask(value):
        calls.append(value)
        return real_umask(value)

    monkeypatch.setattr(os, "umask", umask)
    assert runs.current_umask() == old and calls == []  # read from /proc: another thread never sees a change


def test_current_umask_without_proc_sets_and_restores_it(monkeypatch):
    import builtins

    real_open = builtins.open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc/"):
            raise OSError(2, "No such file or directory")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_proc)
    old = os.umask(0o037)
    try:
        assert runs.current_umask() == 0o037
        assert os.umask(0o037) == 0o037, "the umask is put back"
    finally:
        os.umask(old)


def test_a_run_folder_lifecycle_written_and_read_back_without_training(tmp_path):
    import re
    import socket

    run = runs.create_run(tmp_path / "runs", "my exp/../x", "kfold")
    assert run.path.parent == (tmp_path / "runs").resolve()
    assert re.fullmatch(r"\d{8}T\d{6}Z-my_exp_.._x-[0-9a-f]{6}", run.path.name), run.path.name
    status = json.loads((run.path / "status.json").read_text())
    assert status["status"] == "running" and status["command"] == "kfold" and status["pid"] == os.getpid()
    assert status["host"] == socket.gethostname() and status["started"] == status["updated"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", status["started"]) and "ended" not in status
    assert runs.read_run(run.path).status == "running"  # this process is alive

    run.write_config({"name": "x", "seed": 1})
    run.write_text("summary.txt", "a model\n")
    run.write_json("folds/r0-f0/metrics.json", {"loss": 1.0})
    writer = run.history("folds/r0-f0/history.csv")
    writer.append(1, {"loss": 0.5, "val_loss": None})
    writer.append(2, {"loss": 0.25, "val_loss": 0.75, "extra": 9.0})
    writer.close()
    writer.close()
    assert (run.path / "folds" / "r0-f0" / "history.csv").read_text() == (
        "epoch,loss,val_loss\n1,0.5,\n2,0.25,0.75\n")
    history = runs.read_history(run.path / "folds" / "r0-f0" / "history.csv")
    assert history["epoch"] == [1.0, 2.0] and history["loss"] == [0.5, 0.25] and math.isnan(history["val_loss"][0])
    assert (run.path / "summary.txt").read_text() == "a model\n"
    assert runs.read_json(run.path / "folds" / "r0-f0" / "metrics.json") == {"loss": 1.0}

    run.set_status("interrupted", error="stopped")
    again = runs.open_run(run.path)
    assert again.path == run.path and again.command == "kfold" and again.status["error"] == "stopped"
    record = runs.read_run(run.path)
    assert record.status == "interrupted" and record.config == {"name": "x", "seed": 1}
    assert record.status_data["ended"] >= record.status_data["started"] and record.problems == []
    assert record.command == "kfold" and record.name == run.path.name
    assert runs.find_runs([tmp_path]) == [run.path]
    with pytest.raises(runs.RunError, match=r"not a kexp run folder \(no status\.json\)"):
        runs.open_run(tmp_path)


@pytest.mark.parametrize("name, safe", [("a b", "a_b"), ("..x..", "x"), ("", "run"), ("/", "run"), ("é-1", "é-1"),
                                        ("x" * 80, "x" * 60)])
def test_safe_name_keeps_letters_digits_dot_dash_underscore(name, safe):
    assert runs.safe_name(name) == safe


def test_read_run_of_a_dead_process_or_odd_status_is_incomplete(tmp_path):
    import socket

    folder = tmp_path / "r"
    folder.mkdir()
    for status, expected in [({"status": "running", "pid": 2**22 + 12345, "host": socket.gethostname()}, "incomplete"),
                             ({"status": "running", "pid": 1, "host": "elsewhere"}, "running"),
                             ({"status": "running", "pid": "x", "host": socket.gethostname()}, "incomplete"),
                             ({"status": "done?"}, "incomplete"), ({"status": "failed"}, "failed")]:
        (folder / "status.json").write_text(json.dumps(status))
        assert runs.read_run(folder).status == expected, status
    (folder / "status.json").write_text("{")
    (folder / "metrics.json").write_text("[1]")
    (folder / "config.yaml").write_text("name: y\n")
    record = runs.read_run(folder)
    assert record.status == "incomplete" and record.config == {"name": "y"} and record.metrics is None
    assert record.problems == ["status.json: unreadable (JSONDecodeError)"]
    (folder / "status.json").unlink()
    assert runs.read_run(folder).problems == ["status.json: missing"]


# --------------------------------------------------------------------------- reading partial/damaged folders
# (fast tests written against mutmut's survivors: see TESTING.md)
def test_read_history_skips_a_cut_last_row_and_damaged_rows_and_cells(tmp_path):
    path = tmp_path / "history.csv"
    path.write_bytes(b"epoch,loss\n1,0.5\n2,0.4,extra\n3,\n4,abc\n5,0.\xff1\n6,0.2\n7,0.1")
    history = runs.read_history(path)
    assert history["epoch"] == [1.0, 3.0, 4.0, 5.0, 6.0]  # 2: too many cells; 7: cut short by a crash
    assert history["loss"][0] == 0.5 and history["loss"][4] == 0.2
    assert all(math.isnan(v) for v in history["loss"][1:4])  # empty, not a number, not UTF-8
    path.write_text("epoch,loss\n1,0.5\n2,0.4\n")
    assert runs.read_history(path) == {"epoch": [1.0, 2.0], "loss": [0.5, 0.4]}
    path.write_text("epoch,loss\n1,0.5")
    assert runs.read_history(path) == {"epoch": [], "loss": []}
    path.write_text("epoch,loss")
    assert runs.read_history(path) == {"epoch": [], "loss": []}
    path.write_text("")
    assert runs.read_history(path) == {}


def test_read_run_takes_a_string_and_prefers_config_json(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "status.json").write_text(json.dumps({"status": "completed", "command": "train"}))
    (folder / "config.yaml").write_text("name: from-yaml\n")
    (folder / "config.json").write_text(json.dumps({"name": "from-json"}))
    record = runs.read_run(str(folder))
    assert record.path == folder and record.name == "r"
    assert record.config == {"name": "from-json"} and record.problems == []
    (folder / "config.json").unlink()
    assert runs.read_run(str(folder)).config == {"name": "from-yaml"}


def test_read_run_lists_each_damaged_file_and_keeps_the_rest(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "status.json").write_text(json.dumps({"status": "completed"}))
    (folder / "config.json").write_text("{not json")
    (folder / "config.yaml").write_text("a: [1\n")
    (folder / "metrics.json").write_bytes(b'{"x": "\xff"}')
    record = runs.read_run(folder)
    assert record.status == "completed" and record.config is None and record.metrics is None
    assert record.problems == ["config.json: unreadable (JSONDecodeError)", "config.yaml: unreadable",
                               "metrics.json: unreadable (UnicodeDecodeError)"]
    (folder / "config.json").write_text("[1, 2]")  # JSON, but not a config
    (folder / "metrics.json").write_text('{"loss": 1.5}')
    record = runs.read_run(folder)
    assert record.config is None and record.metrics.to_dict() == {"loss": 1.5} and record.problems == []
    (folder / "config.json").unlink()
    (folder / "config.yaml").write_bytes(b"name: \xff\n")
    assert runs.read_run(folder).problems == ["config.yaml: unreadable"]
    (folder / "config.yaml").write_text("- 1\n- 2\n")  # YAML, but not a config
    record = runs.read_run(folder)
    assert record.config is None and record.problems == []


def test_read_run_of_a_running_status_trusts_a_live_pid_only(tmp_path, monkeypatch):
    import socket

    folder = tmp_path / "r"
    folder.mkdir()
    host = socket.gethostname()
    alive, signals = {1, 4242}, []

    def kill(pid, sig):  # no real signal is ever sent by this test
        signals.append(sig)
        if pid not in alive:
            raise ProcessLookupError
        if pid == 4242:
            raise PermissionError  # another user's live process

    monkeypatch.setattr(runs.os, "kill", kill)

    def status_of(pid):
        (folder / "status.json").write_text(json.dumps({"status": "running", "pid": pid, "host": host}))
        return runs.read_run(folder).status

    assert status_of(0) == "incomplete" and status_of(-1) == "incomplete"  # never the process group
    assert status_of(1) == "running"
    assert status_of(4242) == "running"
    assert status_of(777) == "incomplete"
    assert signals and set(signals) == {0}  # reading a folder only asks whether the process exists


def test_create_run_reports_a_run_folder_it_cannot_create(tmp_path, monkeypatch):
    make = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self.parent == tmp_path.resolve():
            raise PermissionError(13, "Permission denied")
        return make(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(runs.RunError, match=r": cannot create a run folder: Permission denied$"):
        runs.create_run(tmp_path, "x", "train")


def test_is_run_folder_needs_status_or_config_with_environment_or_metrics(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    assert not runs.is_run_folder(folder)
    (folder / "config.yaml").write_text("name: x\n")
    assert not runs.is_run_folder(folder)  # a config alone is somebody's config file
    (folder / "environment.json").write_text("{}")
    assert runs.is_run_folder(folder)
    (folder / "environment.json").unlink()
    (folder / "metrics.json").write_text("{}")
    assert runs.is_run_folder(folder)
    (folder / "config.yaml").unlink()
    assert not runs.is_run_folder(folder)
    (folder / "status.json").write_text("{}")
    assert runs.is_run_folder(folder)


def test_find_runs_walks_every_root_skips_hidden_and_config_only_folders_and_sorts_by_name(tmp_path):
    def run(*parts):
        folder = tmp_path.joinpath(*parts)
        folder.mkdir(parents=True)
        (folder / "status.json").write_text("{}")
        return folder

    b2 = run("b", "2-run")
    a3 = run("a", "3-run")
    run("a", "3-run", "folds", "f0")  # a run's own subfolder
    run("a", ".hidden", "1-run")
    c1 = run("c", "1-run")
    old = tmp_path / "a" / "0-old"
    old.mkdir()
    (old / "config.yaml").write_text("name: x\n")  # config alone: not a run
    (old / "metrics.json").write_text("{}")
    (tmp_path / "a" / "just-config").mkdir()
    (tmp_path / "a" / "just-config" / "config.yaml").write_text("name: x\n")
    found = runs.find_runs([tmp_path / "missing", tmp_path / "a", tmp_path / "b", tmp_path / "c"])
    assert found == [old, c1, b2, a3]
    assert runs.find_runs([a3, b2, tmp_path / "c"]) == [c1, b2, a3]  # a root that is a run, then more roots
    assert runs.find_runs([tmp_path / "missing"]) == []
    same_a, same_b = run("x", "a", "5-run"), run("x", "b", "5-run")
    assert runs.find_runs([tmp_path / "x"]) == [same_a, same_b]


def test_duration_is_seconds_since_the_start_rounded_to_milliseconds(monkeypatch):
    monkeypatch.setattr(runs.time, "perf_counter", lambda: 12.3456789)
    assert runs.duration(2.0) == 10.346


def test_run_writes_config_yaml_and_json_and_the_history_csv(tmp_path):
    run = runs.create_run(tmp_path / "deep" / "er" / "runs", "x", "train")
    assert run.command == "train" and run.path.parent == (tmp_path / "deep" / "er" / "runs").resolve()
    run.write_config({"name": "x"}, {"name": "x", "resolved": True})
    assert (run.path / "config.yaml").read_text() == "name: x\n"
    assert json.loads((run.path / "config.json").read_text()) == {"name": "x", "resolved": True}
    run.write_config({"name": "y"})
    assert json.loads((run.path / "config.json").read_text()) == {"name": "y"}
    run.write_yaml("extra.yaml", {"k": [1, 2]})
    assert (run.path / "extra.yaml").read_text() == "k:\n- 1\n- 2\n"
    runs.write_yaml(run.path / "plain.yaml", {"a": 1})
    assert (run.path / "plain.yaml").read_text() == "a: 1\n"
    writer = run.history()
    writer.append(1, {"loss": 0.5})
    writer.close()
    assert (run.path / "history.csv").read_text() == "epoch,loss\n1,0.5\n"
    with pytest.raises(ValueError):
        writer.append(2, {"loss": 0.4})  # closed: nothing more is written


def test_create_run_status_json_and_a_second_run_in_the_same_folder(tmp_path):
    first = runs.create_run(tmp_path, "x", "train")
    second = runs.create_run(tmp_path, "x", "train")
    assert first.path != second.path and first.path.parent == second.path.parent
    status = json.loads((first.path / "status.json").read_text())
    assert sorted(status) == ["command", "host", "pid", "started", "status", "updated"]
    assert status["status"] == "running"


def test_create_run_tries_another_name_when_one_is_taken(tmp_path, monkeypatch):
    import datetime as dt
    import secrets

    fixed = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    monkeypatch.setattr(runs, "datetime", type("Fixed", (), {"now": staticmethod(lambda tz=None: fixed)}))
    tokens = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(tokens))
    first = runs.create_run(tmp_path, "x", "train")
    second = runs.create_run(tmp_path, "x", "train")
    assert first.path.name == "20260102T030405Z-x-aaaaaa" and second.path.name == "20260102T030405Z-x-bbbbbb"
    monkeypatch.setattr(secrets, "token_hex", lambda n: "aaaaaa")  # every name taken
    with pytest.raises(runs.RunError, match=r": could not find a free run folder name$"):
        runs.create_run(tmp_path, "x", "train")


def test_create_run_refuses_a_runs_folder_it_cannot_write_to(tmp_path, monkeypatch):
    monkeypatch.setattr(runs.os, "access", lambda path, mode: mode == os.F_OK)  # exists, not writable
    with pytest.raises(runs.RunError, match=r"runs: the runs folder is not writable$"):
        runs.create_run(tmp_path / "runs", "x", "train")


def test_create_run_reports_a_runs_folder_it_cannot_create(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(runs.RunError, match=r"file/runs: cannot create the runs folder: Not a directory$"):
        runs.create_run(tmp_path / "file" / "runs", "x", "train")


def test_times_are_utc_whatever_the_local_time_zone(tmp_path, monkeypatch):
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")  # UTC+9, no daylight saving
    time.tzset()
    try:
        before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        run = runs.create_run(tmp_path, "x", "train")
        now = runs.utc_now()
        after = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    finally:
        monkeypatch.undo()
        time.tzset()
    assert before <= now <= after
    stamp = before.replace("-", "").replace(":", "")[:11]  # yyyymmddThh
    assert run.path.name.startswith(stamp) or run.path.name.startswith(after.replace("-", "").replace(":", "")[:11])


def test_open_run_of_a_status_without_command(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "status.json").write_text(json.dumps({"status": "failed"}))
    run = runs.open_run(str(folder))
    assert run.command == "" and run.status == {"status": "failed"} and run.path == folder.resolve()


def test_write_json_refuses_what_json_cannot_hold_and_names_it(tmp_path):
    with pytest.raises(TypeError, match=r"^cannot write object as JSON$"):
        runs.write_json(tmp_path / "x.json", {"a": object()})


def test_safe_name_keeps_a_leading_or_trailing_x():
    assert runs.safe_name("Xray-X") == "Xray-X"
