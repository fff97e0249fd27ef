"""`kexp predict` and `kexp evaluate`: a run's final model applied to new data, with the preprocessing it
was trained with.

The run folder gives everything: `model.keras` (loaded in Keras' safe mode), `preprocessing.json` (the
statistics, fill values, categories and label encodings fitted on the model's training rows, read back by
`Preprocessor.from_record`), config.yaml (how the training data was read: columns, array names, the
preprocessing settings) and environment.json (the config's folder, for
`name:split` data with relative paths).

DATA is a file in the training data's format (the run's `dataset.name`: csv or npz), read with the same
columns or array names, or `NAME:SPLIT` for the run's own dataset (`iris:test`, `imdb:train`, also
`csv:test`). Every column or array that is missing, extra or of the wrong width is reported, all at once,
before the model runs. Problems are `DataError`s (exit 2) that start with `DATA:`; a run folder without a
model is a `RunError`.

Predictions (`Predictions`): per output (columns prefixed `OUTPUT_` when the model has several),
classification gives `class` (the class id), `class_name` (when the labels are named) and one probability
column per class (`prob_NAME` or `prob_ID`); regression gives `value` (`value_0`, ... for several
values per sample). `evaluate` returns the compiled metrics (`model.evaluate`), as `metrics.json`'s `test`.

Code is imported only from the `plugins` the caller passes (`--plugins`), never from the list in the run's
config.yaml: a run folder may come from someone else. A model that cannot load without them says which.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kexp import layout
from kexp.backend import resolve, select, use
from kexp.errors import DataError, RunError, close_matches

SPLIT = re.compile(r"^(?P<name>[a-z][a-z0-9_]*):(?P<split>train|test)$")


@dataclass
class Predictions:
    """Prediction columns, in order; every column has one value per row of DATA."""

    columns: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def rows(self, limit: int | None = None) -> list[list[str]]:
        """The rows as text (float32 values in their shortest exact form)."""
        n = len(self) if limit is None else min(limit, len(self))
        texts = [_texts(values[:n]) for values in self.columns.values()]
        return [list(row) for row in zip(*texts)]

    def to_csv(self, target: Path | io.TextIOBase) -> None:
        """Write the predictions as CSV (a header row, then one row per sample)."""
        if isinstance(target, (str, Path)):
            with open(target, "w", newline="", encoding="utf-8") as handle:
                self.to_csv(handle)
            return
        writer = csv.writer(target, lineterminator="\n")
        writer.writerow(list(self.columns))
        writer.writerows(self.rows())


@dataclass
class Evaluation:
    metrics: dict[str, float]
    n_samples: int


# --------------------------------------------------------------------------- the two entry points
def predict(run: Path, data: str, *, plugins: tuple[str, ...] | list[str] = ()) -> Predictions:
    """The predictions of RUN's final model for DATA (see the module docstring)."""
    loaded = _Loaded(Path(run), plugins)
    rows = read_data(loaded, data, labelled=False)
    x = loaded.prepare(rows)
    model = loaded.model(x)
    from kexp.backend import batches
    from kexp.training import EVAL_BATCH

    ds = batches(x, None, max(loaded.config.training.batch_size, EVAL_BATCH))
    outputs = model.predict(ds, verbose=0)
    return _columns(loaded, model, outputs)


def evaluate(run: Path, data: str, *, plugins: tuple[str, ...] | list[str] = ()) -> Evaluation:
    """RUN's final model's compiled metrics (loss included) on the labelled DATA."""
    loaded = _Loaded(Path(run), plugins)
    rows = read_data(loaded, data, labelled=True)
    x = loaded.prepare(rows)
    model = loaded.model(x)
    from kexp.training import _test_scores

    rows.x_test, rows.y_test = rows.x_train, rows.y_train
    return Evaluation(_test_scores(loaded.config, rows, model, loaded.pre), _n(x))


# --------------------------------------------------------------------------- the run folder
class _Loaded:
    """A run folder's config, preprocessing record and model file, its plugins imported."""

    def __init__(self, run: Path, plugins):
        from kexp import plugins as plugging
        from kexp.config import read_config_file, validate_config
        from kexp.runs import read_json

        self.run = run
        if not (run / layout.CONFIG_YAML).is_file():
            raise RunError(f"{run}: not a kexp run folder ({layout.CONFIG_YAML} missing)")
        raw = read_config_file(run / layout.CONFIG_YAML)
        try:
            config_file = read_json(run / layout.ENVIRONMENT).get("config_file")
        except (OSError, ValueError, AttributeError):
            config_file = None
        self.config_dir = Path(config_file).parent if isinstance(config_file, str) and config_file else run
        if isinstance(raw, dict) and isinstance(raw.get("backend"), str):  # before a plugin can import Keras
            select(resolve(raw["backend"], f"{run / layout.CONFIG_YAML}: backend"))
        plugging.import_plugins(plugins)  # never the run's own list: a folder makes kexp import no code
        self.config = validate_config(raw, source=str(run / layout.CONFIG_YAML))
        use(self.config, str(run / layout.CONFIG_YAML))  # the backend it trained on
        self.plugins = [path for path in self.config.plugins or []
                        if path not in plugging.resolve(plugins, None)]
        if not (run / layout.MODEL).is_file():
            why = (" (a K-fold run keeps a model only with validation.final: retrain with it set)"
                   if self.config.validation.scheme == "kfold" else "")
            raise RunError(f"{run}: has no {layout.MODEL}{why}")
        if not (run / layout.PREPROCESSING).is_file():
            raise RunError(f"{run}: has no {layout.PREPROCESSING} for its {layout.MODEL} (written by kexp 0.2 "
                           "and later); train the run again to predict with it")
        self.record = read_json(run / layout.PREPROCESSING)
        self.labels = self.record.get("labels") or {}
        self.pre = None

    def multi(self) -> bool:
        return "task" not in self.labels

    def outputs(self) -> dict[str, dict]:
        """Output name ("" for a single output) -> its label record (task, encoding, classes, names)."""
        return dict(self.labels) if self.multi() else {"": self.labels}

    def prepare(self, rows) -> Any:
        from kexp.preprocessing import Preprocessor

        self.pre = Preprocessor.from_record(self.config, rows, self.record)
        _check_statistics(self.pre, rows.x_train)
        return self.pre.transform(rows.x_train)

    def model(self, x: Any):
        """The model (safe mode), after checking that the prepared DATA fits its inputs."""
        import keras

        try:
            model = keras.saving.load_model(self.run / layout.MODEL, safe_mode=True)
        except Exception as exc:
            hint = ("; if it uses your own objects, pass their module with --plugins"
                    if "custom" in str(exc).lower() or "unknown" in str(exc).lower() else "")
            if self.plugins:
                hint = f"; the run was trained with plugins: pass --plugins {' --plugins '.join(self.plugins)}"
            raise RunError(f"{self.run / layout.MODEL}: cannot load the model: {str(exc).splitlines()[0]}{hint}") \
                from None
        _check_widths(model, x)
        return model


# --------------------------------------------------------------------------- DATA
def read_data(loaded: _Loaded, data: str, *, labelled: bool):
    """DATA as a `Data` whose x_train/y_train are its rows (y_train None when unlabelled), with the task,
    classes and class names of the run."""
    from kexp.data import Data

    spec = loaded.config.dataset
    path = Path(data).expanduser()
    found = SPLIT.match(data)
    if path.exists() and not path.is_dir():
        if spec.name == "csv":
            x, y, names, kinds = _read_csv(loaded, path, labelled)
        elif spec.name == "npz":
            x, y, names, kinds = _read_npz(loaded, path, labelled)
        else:
            raise DataError(f"DATA: {data}: the run was trained on the built-in dataset {spec.name}; give "
                            f"{spec.name}:train or {spec.name}:test")
    elif found:
        if found["name"] != spec.name:
            raise DataError(f"DATA: {data}: the run was trained on {spec.name}; give {spec.name}:train or "
                            f"{spec.name}:test, or a file of the same format")
        x, y, names, kinds = _read_split(loaded, found["split"])
    else:
        what = "is a folder" if path.is_dir() else "no such file"
        raise DataError(f"DATA: {what}; got {data}; give a {spec.name if spec.name in ('csv', 'npz') else 'CSV or NPZ'}"
                        f" file, or {spec.name}:train / {spec.name}:test")
    outputs = loaded.outputs()
    if loaded.multi():
        task = {out: rec.get("task") for out, rec in outputs.items()}
        num_classes = {out: rec.get("num_classes") for out, rec in outputs.items()}
        class_names = {out: rec.get("class_names") for out, rec in outputs.items()}
    else:
        task, num_classes, class_names = (outputs[""].get(k) for k in ("task", "num_classes", "class_names"))
    return Data(x_train=x, y_train=y, x_test=None, y_test=None, task=task, num_classes=num_classes,
                class_names=class_names, feature_names=names, source=data, categorical=kinds)


def _read_split(loaded: _Loaded, split: str):
    from kexp.data import load_dataset

    data = load_dataset(loaded.config.dataset, config_dir=loaded.config_dir)
    x, y = (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
    if x is None or not _n(x):
        raise DataError(f"DATA: {loaded.config.dataset.name}:{split}: the dataset has no {split} part")
    _same_classes(loaded, data)
    return x, y, data.feature_names, data.categorical


def _same_classes(loaded: _Loaded, data) -> None:
    """The dataset as loaded now must name its classes as when the run trained."""
    names = data.class_names if isinstance(data.class_names, dict) else {"": data.class_names}
    for out, rec in loaded.outputs().items():
        if rec.get("class_names") is not None and (names or {}).get(out) != rec.get("class_names"):
            raise DataError(f"DATA: the classes are now {names.get(out)}; the model was trained on "
                            f"{rec.get('class_names')}")


def _read_csv(loaded: _Loaded, path: Path, labelled: bool):
    from kexp.data import csv as reader
    from kexp.data.tables import select_features

    spec = loaded.config.dataset
    header, body, lines = reader._read_csv(path, spec.delimiter, "DATA")
    outputs = {"": spec.target} if isinstance(spec.target, str) else dict(spec.target)
    targets = list(dict.fromkeys(outputs.values()))
    features = list(loaded.record.get("feature_names") or [])
    weight = getattr(spec, "sample_weight", None)
    problems = []
    missing = [name for name in features if name not in header]
    if missing:
        problems.append(f"DATA: {path}: missing column{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(missing)}{close_matches(missing[0], header)}; "
                        f"the model takes {', '.join(features)}")
    if labelled:
        absent = [name for name in targets if name not in header]
        if absent:
            problems.append(f"DATA: {path}: missing target column{'s' if len(absent) > 1 else ''} "
                            f"{', '.join(absent)}; evaluate needs the labels")
    if spec.features is None:  # every other column was a feature: another one would have been one
        extra = [name for name in header if name not in features and name not in targets and name != weight]
        if extra:
            problems.append(f"DATA: {path}: extra column{'s' if len(extra) > 1 else ''} {', '.join(extra)}: the "
                            f"model was trained on {', '.join(features)} (every column but the target); remove "
                            "them, or name the features in dataset.features")
    if problems:
        raise DataError(problems)
    selection = select_features(spec.features, header, "dataset.features", default=features)
    used = targets if labelled else []
    columns = reader._Columns(outputs, used, selection, features, set(spec.categorical))
    policy = spec.missing if labelled or spec.missing != "drop" else "error"  # no row goes unpredicted
    values, cells, problems, n = reader._read_part(columns, policy, "DATA", path, header, body, lines)
    if problems:
        raise DataError(problems)
    x, kinds = reader._csv_inputs(values, reader._reindex(selection, header, features), features,
                                  set(spec.categorical), n)
    y = None
    if labelled:
        y = {out: _labels(loaded, out, np.array(cells[column], dtype=object), f"DATA: {path}: column {column!r}")
             for out, column in outputs.items()}
        y = y[""] if "" in y else y
    return x, y, features, kinds


def _read_npz(loaded: _Loaded, path: Path, labelled: bool):
    from kexp.data.npz import open_npz

    spec = loaded.config.dataset
    with open_npz(path, "DATA") as archive:
        available = list(archive.files)

        def names(value):
            return {"": value} if isinstance(value, str) else dict(value or {})

        x_names, y_names = names(spec.x), names(spec.y)
        test = not all(n in available for n in x_names.values()) and spec.x_test is not None \
            and all(n in available for n in names(spec.x_test).values())
        if test:  # the file holds test arrays only: they stand for the training ones
            x_names, y_names = names(spec.x_test), names(spec.y_test)
        known = {n for field in ("x", "y", "x_test", "y_test") for n in names(getattr(spec, field)).values()}
        problems = []
        missing = [n for n in x_names.values() if n not in available]
        if labelled:
            missing += [n for n in y_names.values() if n not in available]
        if missing:
            problems.append(f"DATA: {path}: missing array{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
                            f"{close_matches(missing[0], available)}; arrays: {', '.join(available) or 'none'}")
        extra = [n for n in available if n not in known]
        if extra:
            problems.append(f"DATA: {path}: extra array{'s' if len(extra) > 1 else ''} {', '.join(extra)}: the "
                            f"model takes {', '.join(x_names.values())} (dataset.x); remove them")
        if problems:
            raise DataError(problems)
        x = {key: archive[n] for key, n in x_names.items()}
        y = {key: archive[n] for key, n in y_names.items()} if labelled else None
    problems = []
    for key, array in x.items():
        where = f"DATA: {path}: array {x_names[key]!r}"
        if array.dtype.kind == "f":
            x[key] = array = array.astype(np.float32, copy=False)
            if spec.missing in ("error", "drop") and np.isnan(array).any():
                problems.append(f"{where}: holds NaN values (dataset.missing: {spec.missing}); every row needs "
                                "a value to be predicted")
        elif array.dtype.kind not in "iub":
            problems.append(f"{where}: inputs must be numbers; got dtype {array.dtype}")
    lengths = {n: len(a) for n, a in [*((x_names[k], a) for k, a in x.items()),
                                       *((y_names[k], a) for k, a in (y or {}).items())]}
    if len(set(lengths.values())) > 1:
        problems.append(f"DATA: {path}: the arrays have different numbers of rows: "
                        f"{', '.join(f'{n} {m}' for n, m in lengths.items())}")
    if problems:
        raise DataError(problems)
    if y is not None:
        y = {out: _labels(loaded, out, array, f"DATA: {path}: array {y_names[out]!r}") for out, array in y.items()}
        y = y[""] if "" in y else y
    return (x[""] if "" in x else x), y, None, None


def _labels(loaded: _Loaded, out: str, values: np.ndarray, where: str) -> np.ndarray:
    """Labels as the run encoded them: class names through the run's class list, numbers as numbers."""
    rec = loaded.outputs().get(out) or {}
    task, names, k = rec.get("task"), rec.get("class_names"), rec.get("num_classes")
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if names is not None:
        index = {name: i for i, name in enumerate(names)}
        texts = [v.decode() if isinstance(v, bytes) else str(v).strip() for v in values.tolist()]
        unknown = sorted({t for t in texts if t not in index})
        if unknown:
            raise DataError(f"{where}: unknown class{'es' if len(unknown) > 1 else ''} {', '.join(unknown[:5])}; "
                            f"the model knows {', '.join(names)}")
        return np.array([index[t] for t in texts], dtype=np.int64)
    try:
        numbers = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: labels must be numbers for this model (it was trained on numbers)") from None
    if task == "regression":
        return numbers.astype(np.float32)
    if numbers.ndim == 2:  # one-hot
        numbers = numbers.argmax(axis=1)
    if not np.array_equal(numbers, np.round(numbers)) or (numbers.size and (numbers.min() < 0 or numbers.max() >= k)):
        raise DataError(f"{where}: class ids must be integers 0..{k - 1}")
    return numbers.astype(np.int64)


# --------------------------------------------------------------------------- checks and columns
def _n(x: Any) -> int:
    from kexp.preprocessing import n_rows

    return n_rows(x)


def _check_widths(model, x: Any) -> None:
    """Every prepared input must have the per-sample shape the model was built for."""
    from kexp.training import input_shape

    shapes = input_shape(x)
    shapes = shapes if isinstance(shapes, dict) else {None: shapes}
    wanted = {t.name: tuple(t.shape[1:]) for t in model.inputs}
    problems = []
    if list(shapes) == [None]:
        expected = [next(iter(wanted.values()))] if len(wanted) == 1 else None
        if expected is None:
            problems.append(f"DATA: one input given; the model takes {len(wanted)}: {', '.join(wanted)}")
        pairs = [("", shapes[None], expected[0])] if expected else []
    else:
        pairs = [(key, shape, wanted.get(key)) for key, shape in shapes.items()]
    for key, shape, expected in pairs:
        if expected is None:
            continue
        if len(shape) != len(expected) or any(w is not None and w != s for s, w in zip(shape, expected)):
            name = f"input {key!r}" if key else "the input"
            problems.append(f"DATA: {name} has shape {_shape(shape)} per sample after preprocessing; the model "
                            f"takes {_shape(expected)}")
    if problems:
        raise DataError(problems)


def _check_statistics(pre, x: Any) -> None:
    """An input standardized in training must have as many values per sample as its statistics."""
    from kexp.data import Ragged

    problems = []
    for key, array in (x.items() if isinstance(x, dict) else [("x", x)]):
        stats = pre.stats.get(key)
        if stats is None or isinstance(array, Ragged):
            continue
        shape = tuple(pre._numeric(key, array[:1]).shape[1:])
        if shape != tuple(stats["mean"].shape):
            name = "the input" if key == "x" and not isinstance(x, dict) else f"input {key!r}"
            problems.append(f"DATA: {name} has shape {_shape(shape)} per sample after preprocessing; the model "
                            f"takes {_shape(stats['mean'].shape)}")
    if problems:
        raise DataError(problems)


def _shape(shape) -> str:
    return "(" + ", ".join("any" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _columns(loaded: _Loaded, model, outputs: Any) -> Predictions:
    records = loaded.outputs()
    if len(records) == 1:
        names, values = [""], [np.asarray(next(iter(outputs.values())) if isinstance(outputs, dict) else outputs)]
    elif isinstance(outputs, dict):  # in the order of the config's targets
        names = [name for name in records if name in outputs]
        values = [np.asarray(outputs[name]) for name in names]
    else:
        names, values = list(model.output_names), [np.asarray(v) for v in outputs]
    losses = loaded.config.compile.loss
    result = Predictions()
    for name, value in zip(names, values, strict=True):
        rec = records.get(name) or {}
        spec = (losses.get(name) or {}) if loaded.config.compile.per_output_loss else losses
        prefix = f"{name}_" if name else ""
        result.columns.update(_output_columns(prefix, rec, value, bool((spec or {}).get("from_logits"))))
    return result


def _output_columns(prefix: str, rec: dict, value: np.ndarray, logits: bool) -> dict[str, np.ndarray]:
    task, names = rec.get("task"), rec.get("class_names")
    value = value.reshape(len(value), -1).astype(np.float32, copy=False)
    if task not in ("binary", "multiclass"):
        if value.shape[1] == 1:
            return {f"{prefix}value": value[:, 0]}
        return {f"{prefix}value_{i}": value[:, i] for i in range(value.shape[1])}
    if value.shape[1] == 1:  # one sigmoid unit: the probability of class 1
        p1 = value[:, 0]
        if logits:
            p1 = (1 / (1 + np.exp(-p1.astype(np.float64)))).astype(np.float32)
        probs = np.stack([np.float32(1) - p1, p1], axis=1)
    else:
        probs = value
        if logits:
            shifted = np.exp(value - value.max(axis=1, keepdims=True))
            probs = (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)
    ids = probs.argmax(axis=1).astype(np.int64)
    labels = names if names is not None else [str(i) for i in range(probs.shape[1])]
    columns = {f"{prefix}class": ids}
    if names is not None:
        columns[f"{prefix}class_name"] = np.array(names, dtype=object)[ids]
    columns.update({f"{prefix}prob_{label}": probs[:, i] for i, label in enumerate(labels)})
    return columns


def _texts(values: np.ndarray) -> list[str]:
    if values.dtype.kind == "f":
        return [_float(v) for v in values.astype(np.float32)]
    return [str(v) for v in values.tolist()]


def _float(value: np.float32) -> str:
    if not math.isfinite(value):
        return str(float(value))
    return np.format_float_positional(value, unique=True, trim="-")
