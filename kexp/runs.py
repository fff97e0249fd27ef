"""Run folders: the only module that writes or reads them.

A run folder is `RUNS_DIR/<UTC time>-<name>-<6 hex>/`, created with `mkdir(exist_ok=False)` so two
runs never share one. Every JSON/YAML file is written atomically (temporary file, fsync, rename) and
CSV histories are flushed per row, so a crash or `kill -9` at any moment leaves a folder that
`read_run` can still read. `status.json` says running / completed / failed / interrupted; a run whose
status is still "running" but whose process is gone reads back as "incomplete".

The layout of a run folder (every path by name) and the metrics.json format are defined in
kexp.layout; this module writes and reads them.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kexp import layout
from kexp.errors import KexpError, RunError
from kexp.layout import STATUS as STATUS_FILE

STATUSES = ("running", "completed", "failed", "interrupted", "incomplete")


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json_default(value: Any):
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _clean(value: Any) -> Any:
    """NaN/inf are not JSON: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars, with their NaNs
        return _clean(value.tolist())
    return value


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the system can tell (Linux), else by the
    classic set-and-restore under a lock."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`. The file gets the
    permissions any other file would (0666 less the umask), not mkstemp's private 0600."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    import tempfile  # writers only: `compare` never imports it (nor secrets, nor socket)

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~current_umask())
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(_clean(obj), indent=2, default=_json_default) + "\n")


def write_yaml(path: Path, obj: Any) -> None:
    from kexp.config import dump_yaml  # only writers need YAML: `compare` reads config.json

    atomic_write(path, dump_yaml(obj))


class HistoryWriter:
    """Appends one CSV row per epoch and flushes it to the operating system (a killed process keeps
    every finished epoch); `close` makes it durable (fsync) before the split's metrics.json says the
    split is finished. An fsync per epoch cost a sweep of 9,600 epochs about 2 s for nothing: after a
    power cut an unfinished split is trained again whatever its history holds."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "w", newline="", encoding="utf-8")
        self._columns: list[str] | None = None

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        if self._columns is None:
            self._columns = ["epoch", *logs]
            self._handle.write(",".join(self._columns) + "\n")
        row = [str(epoch)] + [_fmt(logs.get(col)) for col in self._columns[1:]]
        self._handle.write(",".join(row) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    return repr(float(value))


def read_history(path: Path) -> dict[str, list[float]]:
    """A history CSV as column -> values; a truncated last line is ignored."""
    columns: dict[str, list[float]] = {}
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return columns
    header, body = rows[0], rows[1:]
    if body and not text.endswith("\n"):
        body = body[:-1]  # a row cut short by a crash
    for name in header:
        columns[name] = []
    for row in body:
        if len(row) != len(header):
            continue
        for name, cell in zip(header, row):
            try:
                columns[name].append(float(cell) if cell else math.nan)
            except ValueError:
                columns[name].append(math.nan)
    return columns


# --------------------------------------------------------------------------- writing
@dataclass
class Run:
    """A run folder being written."""

    path: Path
    command: str
    status: dict = field(default_factory=dict)

    def file(self, *parts: str) -> Path:
        target = self.path.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def set_status(self, status: str, **extra: Any) -> None:
        assert status in STATUSES
        self.status.update(status=status, updated=utc_now(), **extra)
        if status != "running":
            self.status.setdefault("ended", utc_now())
        write_json(self.path / STATUS_FILE, self.status)

    def write_json(self, name: str, obj: Any) -> None:
        write_json(self.file(name), obj)

    def write_yaml(self, name: str, obj: Any) -> None:
        write_yaml(self.file(name), obj)

    def write_config(self, config: dict, resolved: dict | None = None) -> None:
        """config.yaml for people (and for `kexp train` to run again); config.json for fast reading back,
        `resolved` when given: the same config with Keras' own argument defaults filled in."""
        self.write_yaml(layout.CONFIG_YAML, config)
        self.write_json(layout.CONFIG_JSON, config if resolved is None else resolved)

    def write_text(self, name: str, text: str) -> None:
        atomic_write(self.file(name), text)

    def history(self, name: str = layout.HISTORY) -> HistoryWriter:
        return HistoryWriter(self.file(name))


def safe_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in name).strip("._-")
    return cleaned[:60] or "run"


def create_run(runs_dir: str | Path, name: str, command: str) -> Run:
    """A new, empty run folder inside `runs_dir`; never reuses or overwrites an existing one."""
    runs_dir = Path(runs_dir)
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"{runs_dir}: cannot create the runs folder: {exc.strerror}") from None
    if not os.access(runs_dir, os.W_OK | os.X_OK):
        raise RunError(f"{runs_dir}: the runs folder is not writable")
    import secrets  # writers only, like tempfile

    root = runs_dir.resolve()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for _ in range(100):
        path = root / f"{stamp}-{safe_name(name)}-{secrets.token_hex(3)}"
        if path.parent != root:  # cannot happen with safe_name, kept as the guarantee
            raise RunError(f"{name!r}: a run name cannot leave the runs folder")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunError(f"{runs_dir}: cannot create a run folder: {exc.strerror}") from None
        run = Run(path=path, command=command)
        run.status = {
            "status": "running",
            "command": command,
            "pid": os.getpid(),
            "host": _hostname(),
            "started": utc_now(),
        }
        run.set_status("running")
        return run
    raise RunError(f"{runs_dir}: could not find a free run folder name")


def open_run(path: str | Path) -> Run:
    """An existing run folder, to resume writing into it."""
    record = read_run(path)
    if record.status_data is None:
        raise RunError(f"{path}: not a kexp run folder (no {STATUS_FILE})")
    return Run(path=Path(path).resolve(), command=record.command or "", status=dict(record.status_data))


# --------------------------------------------------------------------------- reading
@dataclass
class RunRecord:
    """What could be read back from a run folder; `problems` lists what could not."""

    path: Path
    status: str = "incomplete"
    status_data: dict | None = None
    config: dict | None = None
    metrics: layout.Metrics | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def command(self) -> str | None:
        return (self.status_data or {}).get("command")

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def environment(self) -> dict | None:
        """environment.json, read on demand (compare never needs it)."""
        env = _read_json(str(self.path), layout.ENVIRONMENT, [])
        return env if isinstance(env, dict) else None


def _read_json(folder: str, name: str, problems: list[str]) -> Any:
    """The value of the JSON file `name` in `folder`; None when it is missing, or unreadable (then a
    line in `problems`). Plain strings and one open, no stat first: compare reads ~1,500 of these."""
    try:
        with open(os.path.join(folder, name), "rb") as file:
            data = file.read()
        return json.loads(data.decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: invalid JSON or UTF-8
        problems.append(f"{name}: unreadable ({type(exc).__name__})")
        return None


@functools.cache
def _hostname() -> str:
    """This machine's name, as socket.gethostname() gives it (on POSIX, the kernel's node name, read
    without importing socket)."""
    if hasattr(os, "uname"):
        return os.uname().nodename
    import socket

    return socket.gethostname()


def _process_alive(status: dict) -> bool:
    if status.get("host") != _hostname():
        return True  # cannot tell for another machine; trust the file
    pid = status.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_run(path: str | Path) -> RunRecord:
    """Read a run folder without ever raising on its contents."""
    path = path if isinstance(path, Path) else Path(path)
    record = RunRecord(path=path)
    folder = str(path)
    status = _read_json(folder, STATUS_FILE, record.problems)
    if isinstance(status, dict):
        record.status_data = status
        value = status.get("status")
        record.status = value if value in STATUSES else "incomplete"
        if record.status == "running" and not _process_alive(status):
            record.status = "incomplete"
    elif status is None and not record.problems:
        record.problems.append(f"{STATUS_FILE}: missing")
    config = _read_json(folder, layout.CONFIG_JSON, record.problems)
    if config is None and (path / layout.CONFIG_YAML).exists():  # a folder without its JSON copy
        from kexp.config import parse_yaml  # not libyaml: a deeply nested file crashes it (segfault)

        try:
            config = parse_yaml((path / layout.CONFIG_YAML).read_text(encoding="utf-8"), layout.CONFIG_YAML)
        except (OSError, KexpError, UnicodeDecodeError):
            record.problems.append(f"{layout.CONFIG_YAML}: unreadable")
    record.config = config if isinstance(config, dict) else None
    record.metrics = layout.read_metrics(folder, record.problems)
    return record


def readable_run(path: Path, warnings: list[str], as_far: str = "listed") -> RunRecord | None:
    """`read_run` for a listing: None, with a warning, when nothing of the folder is readable; a
    warning too when only part of it is ("... listed as far as readable")."""
    record = read_run(path)
    if record.status_data is None and record.config is None and record.metrics is None:
        warnings.append(f"{path}: skipped, nothing readable ({'; '.join(record.problems) or 'empty'})")
        return None
    if record.problems:
        warnings.append(f"{path}: {'; '.join(record.problems)}; {as_far} as far as readable")
    return record


def is_sweep_folder(path: Path) -> bool:
    """A `kexp sweep` folder (kexp.layout: "sweep folders"): status.json and sweep.json, or sweep.yaml
    (the first file a new sweep writes after its status.json). A project folder that keeps a config
    called sweep.yaml is none: it has no status.json."""
    return (path / STATUS_FILE).is_file() and (
        (path / layout.SWEEP_JSON).is_file() or (path / layout.SWEEP_CONFIG).is_file()
    )


def sweep_of(path: Path) -> Path | None:
    """The sweep folder that holds the run folder `path` as a trial (`<sweep>/trials/<run>`), else None."""
    parent = path.parent
    if parent.name != layout.TRIALS_DIR or not is_sweep_folder(parent.parent):
        return None
    return parent.parent


def is_run_folder(path: Path) -> bool:
    """A run folder (a sweep folder is none: its trials under trials/ are)."""
    found = (path / STATUS_FILE).is_file() or (path / layout.CONFIG_YAML).is_file() and (
        (path / layout.ENVIRONMENT).exists() or (path / layout.METRICS).exists()
    )
    return found and not is_sweep_folder(path)


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Every run folder at or under the given paths (recursively), oldest first by name; in a sweep
    folder, its trials (the run folders under trials/), never the sweep folder itself."""
    found: list[Path] = []
    for root in paths:
        root = Path(root)
        if not root.exists():
            continue
        if root.is_dir() and is_run_folder(root):
            found.append(root)
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            if STATUS_FILE in filenames and (layout.SWEEP_JSON in filenames or layout.SWEEP_CONFIG in filenames):
                dirnames[:] = [layout.TRIALS_DIR] if layout.TRIALS_DIR in dirnames else []  # not plots/
            elif STATUS_FILE in filenames or (layout.CONFIG_YAML in filenames and is_run_folder(here)):
                found.append(here)
                dirnames[:] = []  # a run's own subfolders (folds/, plots/) are not runs
            else:
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return sorted(set(found), key=lambda p: (p.name, str(p)))


def duration(seconds_start: float) -> float:
    return round(time.perf_counter() - seconds_start, 3)


def read_json(path: str | Path) -> Any:
    """A JSON file written by kexp (raises OSError/ValueError when missing or corrupt)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
