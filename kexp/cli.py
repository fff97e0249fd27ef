"""The `kexp` command line: thin commands that call the library and print its results.

Nothing here or at the top of the modules it imports loads TensorFlow: only `train` and `kfold`
(and `validate` of a well-formed config) import the experiment module, which imports Keras.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from kexp.cli_shared import (
    PluginsOpt,
    app,
    err,
    fail,
    out,
    raise_config_error,
    raise_run_error,
)
from kexp.errors import KexpError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is ever imported

# Set by the SIGINT/SIGTERM handler besides raising KeyboardInterrupt, and handed to the experiment:
# should a library swallow that exception (it can land inside h5py while a model is saved), the next
# epoch end raises it again.
STOP = threading.Event()

ConfigArg = Annotated[
    Path,
    typer.Argument(help="The experiment's YAML config.", exists=True, dir_okay=False, readable=True),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a key: --set training.epochs=4 (value is YAML)."),
]
RunsDirOpt = Annotated[Path, typer.Option("--runs-dir", help="Folder that receives run folders.")]
NameOpt = Annotated[str | None, typer.Option("--name", help="Run name (default: the config's).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]
JsonLogsOpt = Annotated[bool, typer.Option(
    "--json-logs", help="One JSON object per event on stdout (start, epoch, split_end, end with the run folder; "
                        "a sweep's trial_start/trial_end) and nothing else; errors stay on stderr.")]
MaybeRunsDirOpt = Annotated[Path | None, typer.Option(
    "--runs-dir", help="Folder that receives run folders (default: runs).")]
WorkersOpt = Annotated[int, typer.Option("--workers", "-j", min=1,
                                         help="Folds trained at once, each in its own process (local executor; "
                                              "on Ray, as many run at once as the cluster's resources allow).")]
ExecutorOpt = Annotated[str | None, typer.Option(
    "--executor", help="Where tasks run: local (processes of this machine) or ray (a Ray cluster). Default: the "
                       "config's executor.kind, then $KEXP_EXECUTOR, then local.")]
class Backend(str, Enum):
    tensorflow = "tensorflow"
    jax = "jax"
    torch = "torch"


BackendOpt = Annotated[Backend | None, typer.Option(
    "--backend", help="Keras' backend (sets the config's backend:). Default: the config's backend, then "
                      "$KERAS_BACKEND, then keras.json, then tensorflow.")]
AddressOpt = Annotated[str | None, typer.Option(
    "--address", help="ray: the cluster to join (host:port, auto). Default: the config's executor.address, then "
                      "$RAY_ADDRESS; else kexp starts a cluster on this machine and stops it at the end.")]
def _only_resume(overrides, name, runs_dir, what: str, config: Path, why: str) -> None:
    """--set, --name and --runs-dir have no place beside --resume."""
    given = [opt for opt, value in (("--set", overrides), ("--name", name), ("--runs-dir", runs_dir)) if value]
    if given:
        raise_config_error(f"{', '.join(given)}: cannot be used with --resume: a resumed {what} finishes with the "
                           f"config it was started with ({config}), {why}")


def _config_or_resume(config: Path | None, resume: Path | None, folder: str) -> None:
    """`kfold`/`sweep` take a CONFIG or `--resume FOLDER`, exactly one."""
    if (config is None) == (resume is None):
        err.print(f"give a CONFIG, or --resume {folder} (not both)")
        raise typer.Exit(2)
    if config is not None and not config.is_file():
        err.print(f"{config}: no such file")
        raise typer.Exit(2)


def _load(config: Path, overrides: list[str] | None, name: str | None, plugins: list[Path] | None = None,
          backend: Backend | None = None):
    """The config with --set and --name applied; a bad --name is reported as the option (with the
    config's own problems, all at once), not as the config file's `name` key. The plugins (the config's
    and --plugins) are imported first and kept in the config as absolute paths."""
    import json
    import re

    from kexp import plugins as plugging
    from kexp.config import NAME_PATTERN, apply_overrides, load_config, read_config_file, show
    from kexp.errors import ConfigError

    overrides, problems = list(overrides or []), []
    try:
        raw = apply_overrides(read_config_file(config), overrides)
    except ConfigError:
        raw = {}  # load_config reports it below
    _early_backend(backend.value if backend else raw.get("backend"))  # plugins may import Keras
    paths = plugging.for_config(raw, config.parent, plugins or [])
    if paths:
        overrides.append(f"plugins={json.dumps(paths)}")
    if backend is not None:
        overrides.append(f"backend={backend.value}")
    if name is not None:  # taken literally: `--name 007` is the text 007, not YAML's number 7
        if re.fullmatch(NAME_PATTERN, name):
            overrides.append(f"name={json.dumps(name)}")
        else:
            problems.append(f"--name: must be letters, digits, '.', '_' or '-' (no paths), at most 100 "
                            f"characters, starting with a letter or digit; got {show(name)}")
    try:
        cfg = load_config(config, overrides)
    except ConfigError as exc:
        raise ConfigError(problems + exc.problems) from None
    if problems:
        raise ConfigError(problems)
    return cfg


def _early_backend(name) -> None:
    """Select the backend before anything can import Keras (a plugin file may): a bad or missing one is
    left for the config's checks to report, with the config's other problems."""
    from kexp import backend
    from kexp.errors import KexpError

    try:
        backend.select(backend.resolve(name if isinstance(name, str) else None))
    except KexpError:
        pass


def _on_sigterm(signum, frame):
    """SIGINT/SIGTERM stop training cleanly: a KeyboardInterrupt, after which the run folder is marked
    interrupted (raised again on the next signal, should Keras or TensorFlow swallow one)."""
    _on_sigterm.received = True
    STOP.set()
    raise KeyboardInterrupt


def _exit_now(signum, frame):
    """A signal once an interrupted run is written up: the interpreter is shutting down; leave quietly."""
    os._exit(130)


@contextmanager
def _stoppable():
    """While training: SIGINT/SIGTERM set STOP and raise KeyboardInterrupt (the run folder is then marked
    interrupted); afterwards the previous handlers are back (or, after a signal, one that exits at once)."""
    import signal

    _on_sigterm.received = False
    STOP.clear()  # an interrupt of an earlier command in this process is over
    saved = {signal.SIGTERM: signal.signal(signal.SIGTERM, _on_sigterm)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when started with SIGINT ignored
        saved[signal.SIGINT] = signal.signal(signal.SIGINT, _on_sigterm)
    try:
        yield
    finally:
        for signum, previous in saved.items():
            signal.signal(signum, _exit_now if _on_sigterm.received else previous)


def _executor(cfg, kind: str | None, address: str | None):
    """The executor the options, the config's executor: section and the environment ask for, as a context
    manager: None (the library's default: --workers local processes), or a RayExecutor closed at the end."""
    from contextlib import nullcontext

    from kexp.errors import UsageError

    section = cfg.executor
    where = "--executor" if kind else "executor.kind" if section and section.kind else "KEXP_EXECUTOR"
    kind = kind or (section.kind if section else None) or os.environ.get("KEXP_EXECUTOR") or "local"
    if kind not in ("local", "ray"):
        raise UsageError(f"{where}: unknown executor; got {kind!r}; allowed: local, ray")
    if kind == "local":
        if address:
            raise UsageError("--address: only the Ray executor joins a cluster; add --executor ray")
        return nullcontext()
    from kexp.config import Executor
    from kexp.ray_executor import RayExecutor

    section = section or Executor()
    return RayExecutor(address or section.address or os.environ.get("RAY_ADDRESS") or None,
                       cpus_per_task=section.cpus_per_task, gpus_per_task=section.gpus_per_task,
                       max_retries=section.max_retries, reuse_workers=section.reuse_workers)


def _execute(command: str, config: Path, overrides, runs_dir: Path | None, name, quiet: bool, workers: int = 1,
             resume: Path | None = None, executor: str | None = None, address: str | None = None,
             plugins: list[Path] | None = None, json_logs: bool = False, backend: Backend | None = None) -> None:
    """The shared body of `train` and `kfold`: load, check, train with a progress display, report."""
    from kexp import layout
    from kexp.config import KFold
    from kexp.runs import read_run

    try:
        if resume is not None:
            from kexp.config import load_config

            _only_resume(overrides, name, runs_dir, "run", resume / layout.CONFIG_YAML,
                         "so that its folds stay comparable; to change it, start a new run from the config")
            record = read_run(resume)
            if record.config is None or record.environment is None:
                raise_run_error(f"{resume}: not a resumable kexp run folder (config.yaml or environment.json missing)")
            cfg = load_config(resume / layout.CONFIG_YAML)  # config.json also holds Keras' own defaults
            cfg = _resumed_backend(cfg, record.environment, backend, resume)
            _early_backend(cfg.backend)
            _import_plugins(cfg, plugins, resume)
            if not isinstance(cfg.validation, KFold):
                raise_config_error(f"{resume}: is a hold-out run; only K-fold runs can be resumed (a hold-out run "
                                   "trains one model in one go: start it again with `kexp train CONFIG`)")
            config_file = record.environment.get("config_file")
            config = Path(config_file) if isinstance(config_file, str) and config_file else resume / layout.CONFIG_YAML
        else:
            cfg = _load(config, overrides, name, plugins, backend)
        if cfg.search is not None:  # never silently dropped
            from kexp.search import refuse_search

            refuse_search(cfg, str(config), command)
        is_kfold = isinstance(cfg.validation, KFold)
        if command == "kfold" and not is_kfold:
            raise_config_error(f"{config}: validation.scheme: is {cfg.validation.scheme}; `kexp kfold` runs "
                               "scheme: kfold; use `kexp train` for hold-out, or set validation.scheme: kfold")
        if command == "train" and is_kfold:
            raise_config_error(f"{config}: validation.scheme: is kfold; run it with `kexp kfold {config}`")
        from kexp.experiment import execute
        from kexp.progress import Display

        display = Display(out, quiet=quiet, mode="json" if json_logs else "auto")
        with _executor(cfg, executor, address) as runner, _stoppable(), display:
            result = execute(cfg, command=command, runs_dir=runs_dir or Path("runs"), config_path=config,
                             argv=sys.argv, observer=display, workers=workers, resume=resume, stop=STOP,
                             executor=runner)
        display.report(result)  # a resumed run that was complete already: says so
    except KexpError as error:
        fail(error)
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None


def _resumed_backend(cfg, environment: dict | None, backend: Backend | None, folder: Path):
    """The config of a resumed run or sweep, on the backend it was started on (its environment.json),
    which --backend may only repeat: one run's folds or one sweep's trials are trained on one backend."""
    started = (environment or {}).get("backend") or "tensorflow"
    if backend is not None and backend.value != started:
        raise_config_error(f"--backend {backend.value}: {folder} was started on the {started} backend; a resumed "
                           f"run finishes on it (its folds stay comparable); start a new run for {backend.value}")
    return cfg if cfg.backend else cfg.model_copy(update={"backend": started})


def _import_plugins(cfg, plugins: list[Path] | None, folder: Path) -> None:
    """--plugins of a resumed run or sweep: a folder never makes kexp import code, so each plugin its
    config lists (and its tasks will import) must be named again with --plugins."""
    from kexp import plugins as plugging

    given = plugging.resolve(plugins or [], None)
    unconfirmed = [path for path in cfg.plugins or [] if path not in given]
    if unconfirmed:
        raise_config_error(f"{folder}: was trained with plugins {', '.join(unconfirmed)}; resuming imports them: "
                           f"pass --plugins for each (kexp imports no code that only a run folder names)")
    plugging.import_plugins(given)


@app.command()
def train(
    config: ConfigArg,
    overrides: SetOpt = None,
    runs_dir: RunsDirOpt = Path("runs"),
    name: NameOpt = None,
    quiet: QuietOpt = False,
    executor: ExecutorOpt = None,
    address: AddressOpt = None,
    plugins: PluginsOpt = None,
    json_logs: JsonLogsOpt = False,
    backend: BackendOpt = None,
) -> None:
    """Train with hold-out validation, evaluate on the test split, write a run folder."""
    _execute("train", config, overrides, runs_dir, name, quiet, executor=executor, address=address, plugins=plugins,
             json_logs=json_logs, backend=backend)


@app.command()
def kfold(
    config: Annotated[Path | None, typer.Argument(help="The experiment's YAML config.", dir_okay=False)] = None,
    overrides: SetOpt = None,
    runs_dir: MaybeRunsDirOpt = None,
    name: NameOpt = None,
    quiet: QuietOpt = False,
    workers: WorkersOpt = 1,
    resume: Annotated[Path | None, typer.Option(
        "--resume", file_okay=False, exists=True,
        help="Finish an interrupted K-fold run folder with the config it was started with (no --set, --name, "
             "--runs-dir); a completed run is left as it is.")] = None,
    executor: ExecutorOpt = None,
    address: AddressOpt = None,
    plugins: PluginsOpt = None,
    json_logs: JsonLogsOpt = False,
    backend: BackendOpt = None,
) -> None:
    """K-fold (or iterated K-fold) validation, then optionally retrain and test."""
    _config_or_resume(config, resume, "RUN_FOLDER")
    _execute("kfold", config, overrides, runs_dir, name, quiet, workers=workers, resume=resume, executor=executor,
             address=address, plugins=plugins, json_logs=json_logs, backend=backend)


@app.command()
def sweep(
    config: Annotated[Path | None, typer.Argument(help="A config with a search: section.", dir_okay=False)] = None,
    overrides: SetOpt = None,
    runs_dir: MaybeRunsDirOpt = None,
    name: NameOpt = None,
    quiet: QuietOpt = False,
    workers: WorkersOpt = 1,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Run a grid larger than search.limit.")] = False,
    resume: Annotated[Path | None, typer.Option(
        "--resume", file_okay=False, exists=True,
        help="Finish an interrupted sweep folder: finished trials are kept, a K-fold trial keeps its "
             "finished folds.")] = None,
    executor: ExecutorOpt = None,
    address: AddressOpt = None,
    plugins: PluginsOpt = None,
    json_logs: JsonLogsOpt = False,
    backend: BackendOpt = None,
) -> None:
    """Run every trial of the config's search: section, each scored on its validation scheme (the K-fold
    mean for K-fold); write a sweep folder with a leaderboard, each trial's run folder and best.yaml."""
    _config_or_resume(config, resume, "SWEEP_FOLDER")
    try:
        if resume is not None:
            from kexp import layout
            from kexp.config import load_config

            _only_resume(overrides, name, runs_dir, "sweep", resume / layout.SWEEP_CONFIG,
                         "so that its trials stay comparable; to change it, start a new sweep")
            from kexp.runs import read_json

            if not (resume / layout.SWEEP_CONFIG).is_file():
                raise_run_error(f"{resume}: not a kexp sweep folder ({layout.SWEEP_CONFIG} missing)")
            cfg = load_config(resume / layout.SWEEP_CONFIG)
            try:
                environment = read_json(resume / layout.ENVIRONMENT)
            except (OSError, ValueError):
                environment = {}
            environment = environment if isinstance(environment, dict) else {}
            cfg = _resumed_backend(cfg, environment, backend, resume)
            _early_backend(cfg.backend)
            _import_plugins(cfg, plugins, resume)
            # relative dataset paths resolve against the config file the sweep was started from
            started_from = environment.get("config_file")
            config = (Path(started_from) if isinstance(started_from, str) and started_from
                      else resume / layout.SWEEP_CONFIG)
        else:
            cfg = _load(config, overrides, name, plugins, backend)
        if cfg.search is None:
            raise_config_error(f"{config}: search: missing; `kexp sweep` runs the trials of a search: section "
                               "(see README: kexp sweep); to train this config once, use `kexp train`/`kexp kfold`")
        from kexp.progress import SweepDisplay
        from kexp.sweep import run_sweep

        display = SweepDisplay(out, quiet=quiet, mode="json" if json_logs else "auto")
        with _executor(cfg, executor, address) as runner, _stoppable(), display:
            result = run_sweep(cfg, config_path=config, runs_dir=runs_dir or Path("runs"), argv=sys.argv,
                               observer=display, workers=workers, yes=yes, resume=resume, stop=STOP,
                               executor=runner)
        display.report_sweep(result.path, result.status)
    except KexpError as error:
        fail(error)
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None


@app.command()
def validate(
    config: ConfigArg,
    overrides: SetOpt = None,
    data: Annotated[bool, typer.Option("--data/--no-data", help="Also load the data and build the model.")] = True,
    plugins: PluginsOpt = None,
    backend: BackendOpt = None,
) -> None:
    """Check a config without training: schema first, then names, data and model."""
    try:
        cfg = _load(config, overrides, None, plugins, backend)
        if cfg.search is not None:  # a sweep config: the search section and every trial
            from kexp.search import plan
            from kexp.sweep import check_trials

            check_trials(plan(cfg, str(config), yes=True), config, str(config), data=data)
        elif data:
            from kexp.checks import check
            from kexp.experiment import load_data

            check(cfg, load_data(cfg, config.parent, str(config)), str(config))
        else:  # no data: still every Keras name and argument
            from kexp.checks import check_without_data

            check_without_data(cfg, str(config))
    except KexpError as error:
        fail(error)
    out.print(f"{config}: OK", highlight=False)


# ---- reporting commands


class Format(str, Enum):
    table = "table"
    markdown = "markdown"
    csv = "csv"
    json = "json"


@app.command()
def compare(
    paths: Annotated[list[Path], typer.Argument(
        help="Run folders, or folders searched recursively for them (a sweep folder's runs: its trials).",
        exists=True)],
    sort: Annotated[str | None, typer.Option(
        "--sort", help="Sort by a column (val_best, val_last, margin, duration, ...), a config key "
                       "(training.epochs) or a metric (val_loss, loss@last, test_accuracy).")] = None,
    ascending: Annotated[bool | None, typer.Option(
        "--asc/--desc", help="Sort direction (default: the metric's, loss-like ascending; without --sort, "
                             "--desc lists the newest run first).")] = None,
    where: Annotated[list[str] | None, typer.Option(
        "--where", "-w", help="Keep runs where KEY=VALUE, or KEY!=, <, <=, >, >= VALUE (quote it: "
                              "'training.epochs>=20'); KEY: dataset, status, command, scheme, name, any config key "
                              "or metric (val_best, val_loss); numbers compare as numbers; repeat to AND.")] = None,
    columns: Annotated[str | None, typer.Option(
        "--columns", "-c", help="Columns to show, in order, e.g. run,val_best,training.epochs")] = None,
    last: Annotated[int | None, typer.Option(
        "--last", min=1, help="Keep the N most recent runs (after --where).")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    plot: Annotated[str | None, typer.Option(
        "--plot", help="Also write a PNG overlaying the runs' curves of this metric (accuracy, val_acc, "
                       "price_mae): validation solid, training dashed.")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", dir_okay=False, help="The --plot file (default: compare-METRIC.png).")] = None,
) -> None:
    """Compare runs in one table: metrics, baseline, and the config values that differ."""
    from kexp import report

    try:
        comparison = report.compare(paths, sort=sort, ascending=ascending, where=where or (), columns=columns,
                                    last=last)
        if plot:  # a metric no run has is a usage error before anything is printed
            from kexp import plots

            plot = plots.plot_metric(comparison.records, plot)
        for line in comparison.warnings:
            err.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)
        for line in comparison.hints:
            err.print(f"hint: {line}", markup=False, highlight=False, soft_wrap=True)
        result = report.render(comparison, fmt.value)
        if isinstance(result, str):
            sys.stdout.write(result)
            sys.stdout.flush()
        else:
            out.print(result)
        if plot:
            from kexp import plots

            target = output or Path(f"compare-{plot}.png")
            labels = report.run_labels([r.name for r in comparison.records])
            written = plots.compare_plot(comparison.records, plot, target, labels=labels)
            err.print(f"wrote {written}", markup=False, highlight=False, soft_wrap=True)
    except KexpError as error:
        fail(error)


@app.command()
def show(
    run: Annotated[Path, typer.Argument(help="A run folder, or a sweep folder.", exists=True, file_okay=False)],
) -> None:
    """Show one run in full: status, metrics, folds, baseline, diagnostics, config, files; or a sweep's
    leaderboard."""
    from kexp import report

    try:
        out.print(report.show(run))
    except KexpError as error:
        fail(error)


from kexp import cli_use  # noqa: E402, F401  (registers predict, evaluate, export, schema after these)
