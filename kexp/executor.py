"""Tasks and the executors that run them.

A `Task` is one unit of work: train one split of one config (`kexp.training.run_task`). It is plain,
picklable data (the config as a dict, the absolute config folder for relative dataset paths, the
split's sample indices, the epochs, what to keep) and assumes no shared disk, machine or working
directory. Its `TaskResult` is plain data too; progress comes back as `Event`s. The driver (the
process that owns the run folder) writes every file from events and results.

An executor runs a list of tasks and yields their results as they finish, in any order:

    for result in executor.run(tasks, emit, context): ...

`emit(event)` is called in the driver for every progress event (`start`, `epoch`, `best`); events of
a task whose result was already yielded are dropped. `context` holds what only an in-process
executor can use (the driver's loaded data, the split folders, the stop flag); others ignore it.
An executor raises a task's exception in the driver (KeyboardInterrupt included) after stopping
its other tasks, marked with `exc.task_key` (`tagged`). Shipped: `InProcessExecutor` and
`LocalProcessExecutor` (`--workers N`).
"""

from __future__ import annotations

import os
import queue as queue_module
import signal
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kexp.errors import RunError
from kexp.validation import Split


@dataclass(frozen=True)
class Task:
    key: str  # unique within one executor.run call: the split id ("holdout", "r0-f2", "final")
    config: dict  # the validated config, as plain data
    config_dir: str | None  # absolute folder that relative dataset paths resolve against
    split: Split
    epochs: int
    keep_best: bool = False  # emit a `best` event with the model each time the monitored metric improves
    keep_model: bool = False  # return the trained model, its summary and its test-set scores
    checkpoint: bool = False  # return the model as it is after the last epoch (to be continued later)
    test: bool = True  # keep_model: score it on the test split (a sweep's trials never touch it)
    initial_model: bytes | None = None  # continue this .keras archive (a checkpoint) instead of a new model
    initial_logs: tuple = ()  # ... whose epochs 1..n these were: training goes on from epoch n + 1


@dataclass
class TaskResult:
    key: str
    split: Split
    logs: list[dict]  # one dict of Keras logs per epoch (a continued task's initial logs first)
    metrics: dict  # the split's metrics (folds/<id>/metrics.json)
    preprocessing: dict  # the fitted preprocessing record (preprocessing.json without its header)
    model: bytes | None = None  # the trained model as a .keras archive (keep_model)
    summary: str | None = None  # Keras' model summary (keep_model)
    test: dict | None = None  # test-set scores (keep_model, when the data has a test split)
    files: dict[str, bytes] = field(default_factory=dict)  # callback files, by path in the split's folder
    checkpoint: bytes | None = None  # the last epoch's model (Task.checkpoint)


@dataclass(frozen=True)
class Event:
    kind: str  # "start" (epochs), "epoch" (epoch, logs), "best" (epoch, model)
    key: str
    epoch: int | None = None
    epochs: int | None = None
    logs: dict | None = None
    model: bytes | None = None


def tagged(exc: BaseException, task: Task) -> BaseException:
    """A task's exception, marked with the task's key (`exc.task_key`), as every executor raises it: a
    sweep fails that task's trial and goes on with the others."""
    exc.task_key = task.key
    return exc


@dataclass
class Context:
    """Driver-side help an in-process executor may use; executors elsewhere ignore it."""

    data: Any = None  # the dataset the driver already loaded
    data_of: Callable[[Task], Any] | None = None  # or each task's dataset, when tasks differ in data
    folder_of: Callable[[Task], Path] | None = None  # the split's own folder, for callbacks' files
    should_stop: Callable[[], bool] = lambda: False  # checked at every epoch end


class Executor(Protocol):
    def run(self, tasks: Sequence[Task], emit: Callable[[Event], None],
            context: Context | None = None) -> Iterator[TaskResult]: ...


class InProcessExecutor:
    """Runs the tasks one after another in this process, with the driver's loaded data."""

    def run(self, tasks: Sequence[Task], emit: Callable[[Event], None],
            context: Context | None = None) -> Iterator[TaskResult]:
        from kexp.training import run_task

        context = context or Context()
        for task in tasks:
            folder = context.folder_of(task) if context.folder_of else None
            data = context.data_of(task) if context.data_of else context.data
            try:
                result = run_task(task, emit, context.should_stop, data=data, folder=folder)
            except Exception as exc:
                tagged(exc, task)
                raise
            yield result


class LocalProcessExecutor:
    """Runs tasks in `workers` processes of this machine, each with its share of the CPUs' threads (and
    kept on those CPUs where the backend gains from it, `backend.PINS_WORKERS`); a task goes to
    whichever worker is free next. One task (or one worker) runs in process instead. The
    worker processes (and the data each has loaded) are kept for the next `run` until `close()`, so a
    sweep pays TensorFlow's start-up once per worker, not once per trial."""

    def __init__(self, workers: int):
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._events = None
        self._runs = 0  # tags each run's events: a late event of an earlier run is never taken for this one's

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close(wait=exc[0] is None)

    def close(self, wait: bool = True) -> None:
        """End the workers: after what they are doing (`wait`), or now."""
        if self._pool is not None:
            _stop(self._pool, wait_for_workers=wait)
            self._pool = None

    def start(self, tasks: int) -> None:
        """Start the workers for `tasks` tasks now, not at the first `run`: each imports and starts its
        backend while the driver loads and checks the data (seconds a worker, overlapped)."""
        workers = min(self.workers, tasks)
        if workers > 1 and self._pool is None:
            pool = self._start(workers)
            for _ in range(workers):  # a pool spawns a process for each task it cannot give an idle one
                pool.submit(_ready)

    def _start(self, workers: int) -> ProcessPoolExecutor:
        if self._pool is None:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")  # TensorFlow is not fork-safe
            self._events = ctx.Queue()
            from kexp.backend import PINS_WORKERS, chosen

            cpus = _cpus()
            threads = max(1, len(cpus) // workers)
            pin = PINS_WORKERS.get(chosen(), False) and workers <= len(cpus) and hasattr(os, "sched_setaffinity")
            shares = [cpus[i * threads:(i + 1) * threads] for i in range(workers)] if pin else None
            self._pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_start_worker,
                                             initargs=(threads, self._events, shares, ctx.Value("i", 0)))
        return self._pool

    def run(self, tasks: Sequence[Task], emit: Callable[[Event], None],
            context: Context | None = None) -> Iterator[TaskResult]:
        workers = min(self.workers, len(tasks))
        if workers <= 1:
            yield from InProcessExecutor().run(tasks, emit, context)
            return
        pool = self._start(workers)
        self._runs += 1
        token = self._runs
        finished: set[str] = set()
        clean = False
        try:
            pending = {pool.submit(_run_in_worker, task, token): task for task in tasks}
            while pending:
                done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(self._events, token, emit, finished)
                for future in done:
                    task = pending.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        raise tagged(RunError(f"a worker process died (killed, or out of memory) while training "
                                              f"{task.key}"), task) from None
                    except Exception as exc:
                        tagged(exc, task)
                        raise
                    finished.add(task.key)
                    yield result
            clean = True
        finally:
            if not clean:  # a failure, Ctrl-C, or the caller stopped early: end the workers now
                _stop(pool, wait_for_workers=False)
                self._pool = None


def _drain(events, token: int, emit: Callable[[Event], None], finished: set[str]) -> None:
    while True:
        try:
            tag, event = events.get_nowait()
        except queue_module.Empty:
            return
        if tag == token and event.key not in finished:
            emit(event)


def _stop(pool: ProcessPoolExecutor, wait_for_workers: bool) -> None:
    """Shut the pool down; after a failure or Ctrl-C, end the workers now instead of letting them finish."""
    if wait_for_workers:
        pool.shutdown(wait=True)
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())
    manager = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    # The pool's own thread reaps the workers too; two threads waiting on one child race (the loser sees
    # it as still running), so let that thread finish before joining what is left.
    if manager is not None:
        manager.join(timeout=10)
    for process in processes:
        process.join(timeout=10)


_events = None


def _cpus() -> list[int]:
    """The CPUs this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def _start_worker(threads: int, events, shares: list[list[int]] | None, started) -> None:
    """A worker process: Ctrl-C is the driver's to handle; the next share of the CPUs (`started` counts
    the workers), and as many compute threads, are its own."""
    global _events
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _events = events
    if shares:
        with started.get_lock():
            index, started.value = started.value, started.value + 1
        try:
            os.sched_setaffinity(0, shares[index % len(shares)])
        except OSError:
            pass  # a CPU went away since: stay where the system put it
    from kexp.backend import start_backend

    start_backend(threads)


def _ready() -> None:
    """The task `start` gives each new worker: nothing, once its initializer has run."""


def _run_in_worker(task: Task, token: int) -> TaskResult:
    from kexp.training import run_task

    return run_task(task, lambda event: _events.put((token, event)))
