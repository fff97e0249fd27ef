"""Typed JSON records for kexp's file formats (kexp.layout): a JSON object as a small immutable class whose
known keys are typed fields, whose unknown keys are kept, and whose key order survives a round trip.
Standard library only: `kexp compare` reads hundreds of files through these and must start fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

_KEYS = "keys"  # the field of every record below that keeps the JSON keys in their order
_EXTRA = "extra"  # ... and the one that keeps unknown keys (forward compatibility)


def dump(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: dump(v) for k, v in value.items()}
    if isinstance(value, list):
        return [dump(v) for v in value]
    return value


class Record:
    """A JSON object as a frozen record: its known keys are typed fields (the class's annotations, in
    order, each defaulting to None), its unknown keys stay in `extra`, and `keys` remembers the order
    it was read in, so that `from_dict(d).to_dict() == d`. A value of the wrong type is kept as an
    unknown one (the field reads None): a damaged file is read as far as it goes and written back
    unchanged. Frozen and compared by value like a frozen dataclass, without the ~2 ms per class that
    building a dataclass costs at import (`kexp compare` imports this module)."""

    _READ: ClassVar[dict[str, Any]] = {}  # field -> its JSON type(s), or a converter (None: not that type)
    _NAMES: ClassVar[tuple[str, ...]] = ()  # the fields, in the format's order (set per class)
    _KNOWN: ClassVar[frozenset[str]] = frozenset()
    _ALWAYS: ClassVar[frozenset[str]] = frozenset()  # fields written even when None (as null)
    keys: tuple[str, ...] | None = None  # the JSON keys as read, in order; None: built in code
    extra: dict[str, Any]  # unknown keys -> their values

    def __init__(self, *, keys: tuple[str, ...] | None = None, extra: dict[str, Any] | None = None, **values: Any):
        unknown = set(values) - self._known()
        if unknown:
            raise TypeError(f"{type(self).__name__}: no field {', '.join(sorted(unknown))}")
        self.__dict__.update(values, keys=keys, extra=dict(extra or {}))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: use .replace({name}=...)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._names()) and self.extra == other.extra

    __hash__ = None  # type: ignore[assignment]  # holds dicts, like a frozen dataclass with dict fields

    def __repr__(self) -> str:
        shown = [f"{n}={getattr(self, n)!r}" for n in self._names() if getattr(self, n) is not None]
        return f"{type(self).__name__}({', '.join(shown + ([f'extra={self.extra!r}'] if self.extra else []))})"

    def replace(self, **changes: Any):
        """A copy with some fields changed (its key order kept; a new field is written after the others)."""
        values = {n: getattr(self, n) for n in self._names() if n in self.__dict__}
        return type(self)(**{**values, **changes}, keys=self.keys, extra=self.extra)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names = tuple(n for n in cls.__dict__.get("__annotations__", {}) if not n.startswith("_"))
        type.__setattr__(cls, "_NAMES", names)
        type.__setattr__(cls, "_KNOWN", frozenset(names))

    @classmethod
    def from_dict(cls, data: Any):
        """The record of a JSON object (anything else reads as an empty one); never raises."""
        if not isinstance(data, dict):
            data = {}
        known, read_of = cls._KNOWN, cls._READ
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                extra[key] = value
                continue
            read = read_of.get(key) if value is not None else None
            if read is None:
                values[key] = value
            elif read.__class__ is type or read.__class__ is tuple:  # a plain type: checked, kept as it is
                if isinstance(value, read):
                    values[key] = value
                else:
                    extra[key] = value
            else:
                converted = read(value)
                if converted is None:
                    extra[key] = value
                else:
                    values[key] = converted
        record = object.__new__(cls)  # the fields not in `data` read their class defaults (None)
        record.__dict__.update(values, extra=extra, keys=tuple(data))
        return record

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        """The JSON keys this record knows, in the format's order."""
        return cls._NAMES

    @classmethod
    def _known(cls) -> frozenset[str]:
        return cls._KNOWN

    def _order(self) -> tuple[str, ...]:
        return self._names()

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, keys in the order read (or the format's own order for a new record)."""
        names = set(self._order())
        if self.keys is None:
            order = [k for k in self._order() if getattr(self, k) is not None or k in self._ALWAYS]
        else:
            order = list(self.keys) + [k for k in self._order() if k not in self.keys and getattr(self, k) is not None]
        order += [k for k in self.extra if k not in order]
        extra = self.extra
        return {key: dump(extra[key] if key in extra or key not in names else getattr(self, key)) for key in order}


def object_of(read: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A record's reader for a value that must be a JSON object (anything else is kept as it is)."""
    return lambda value: read(value) if isinstance(value, dict) else None


def dict_of(read: Callable[[Any], Any]) -> Callable[[Any], dict | None]:
    return lambda value: {k: read(v) if isinstance(v, dict) else v for k, v in value.items()} \
        if isinstance(value, dict) else None


def list_of(read: Callable[[Any], Any]) -> Callable[[Any], list | None]:
    return lambda value: [read(v) if isinstance(v, dict) else v for v in value] if isinstance(value, list) else None


TEXT = str  # a field holding text
INT = (int, float)  # a count or an epoch: an int (a float from another writer is kept as it is)
MAPPING = dict  # a field holding a JSON object kept as it is


