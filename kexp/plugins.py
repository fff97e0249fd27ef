"""The user's own Python modules (`--plugins FILE`, the config's `plugins:`): imported before a config
is resolved, so that the layers, metrics, losses and callbacks they register with
`keras.saving.register_keras_serializable` work by name in the config and when a saved model is loaded.

This is the one place where kexp runs a user's code, and only the files the user names (SECURITY.md).
A file is imported once per process, under a module name made from its resolved path; a file that
fails to import is a `ConfigError` naming the file and the line. Paths in a config's `plugins:` are
relative to the config's folder; `resolve` makes them absolute, which is how the run folder's
config.yaml and every task's config carry them (a worker process or a `kexp predict` imports them from
there: `import_config_plugins`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path

from kexp.errors import ConfigError, one_line

_imported: dict[str, str] = {}  # resolved path -> module name


def resolve(paths: Iterable[str | Path], base: Path | None) -> list[str]:
    """Absolute paths of plugin files (relative ones start from `base`, default: the working folder)."""
    base = Path.cwd() if base is None else Path(base)
    return [str((base / Path(path).expanduser()).resolve()) for path in paths]


def import_plugins(paths: Iterable[str | Path], key: str = "--plugins") -> list[str]:
    """Import each file (once per process); every problem at once as a ConfigError naming the file
    and, for an error inside it, the line. Returns the module names."""
    problems, names = [], []
    for given in paths:
        path = Path(given).expanduser().resolve()
        if str(path) in _imported:
            names.append(_imported[str(path)])
            continue
        if not path.is_file():
            what = "is a folder, not a Python file" if path.is_dir() else "no such file"
            problems.append(f"{key}: {what}; got {given}")
            continue
        name = f"kexp_plugin_{path.stem if path.stem.isidentifier() else 'module'}_" \
               f"{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
        try:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        except BaseException as exc:  # any failure of the user's code, SystemExit too, is reported
            sys.modules.pop(name, None)
            if isinstance(exc, KeyboardInterrupt):
                raise
            problems.append(f"{_where(exc, path)}: plugin failed to import: {type(exc).__name__}: "
                            f"{one_line(str(exc))}")
            continue
        _imported[str(path)] = name
        names.append(name)
    if problems:
        raise ConfigError(problems)
    return names


def import_config_plugins(config: dict, config_dir: str | Path | None = None) -> list[str]:
    """Import the plugins a config dict names (a task's, a run folder's config.yaml): absolute paths,
    or relative to `config_dir`. No `plugins` key: nothing."""
    paths = config.get("plugins") if isinstance(config, dict) else None
    if not paths:
        return []
    return import_plugins(resolve(paths, Path(config_dir) if config_dir else None), key="plugins")


def _where(exc: BaseException, path: Path) -> str:
    """`FILE:LINE` of the error inside the plugin file (its innermost frame there), else `FILE`."""
    if isinstance(exc, SyntaxError) and exc.filename and Path(exc.filename).resolve() == path and exc.lineno:
        return f"{path}:{exc.lineno}"
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename and Path(frame.filename).resolve() == path:
            line = frame.lineno
    return f"{path}:{line}" if line else str(path)


def for_config(raw: dict, config_dir: Path | None, given: Iterable[str | Path] = ()) -> list[str]:
    """Import the plugins of a raw config mapping (its `plugins:`, relative to `config_dir`) and those
    given on the command line (relative to the working folder); return all of them as absolute paths,
    the value the resolved config carries (so that workers and `kexp predict` import them too). A
    malformed `plugins:` is left to the schema to report."""
    listed = raw.get("plugins") if isinstance(raw, dict) else None
    ours = resolve(listed, config_dir) if isinstance(listed, list) and all(isinstance(p, str) for p in listed) else []
    import_plugins(ours, key="plugins")
    theirs = resolve(given, None)
    import_plugins(theirs)
    return list(dict.fromkeys(ours + theirs))
