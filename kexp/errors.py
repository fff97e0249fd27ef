"""kexp's own exceptions. The CLI catches KexpError once and turns it into a message and an exit code."""

import difflib
from dataclasses import dataclass, field


class KexpError(Exception):
    """Base of every error kexp reports to a user (no traceback)."""

    exit_code = 1


class ConfigError(KexpError):
    """One or more problems in a config, each a line `FILE: dotted.key: what; got X; allowed: ...`."""

    exit_code = 2

    def __init__(self, problems):
        problems = [problems] if isinstance(problems, str) else list(problems)
        self.problems = [one_line(str(problem)) for problem in problems]
        super().__init__("\n".join(self.problems))

    def __reduce__(self):  # raised in a worker process, re-raised in the driver with its lines intact
        return type(self), (self.problems,)


@dataclass
class Problems:
    """Collected config problems: `key: message` lines, raised together as one ConfigError."""

    lines: list[str] = field(default_factory=list)

    def add(self, key: str, message: str) -> None:
        self.lines.append(f"{key}: {message}")


class UsageError(KexpError):
    """A command-line option that cannot be applied: an unknown key, a malformed KEY=VALUE."""

    exit_code = 2


def close_matches(word: str, choices) -> str:
    """` (did you mean a, b?)` for the choices close to `word`, else empty: the hint in error messages."""
    found = difflib.get_close_matches(str(word), list(choices), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(found)}?)" if found else ""


def one_line(text: str) -> str:
    """A problem as one printable line: newlines, control characters and undecodable bytes (lone
    surrogates) from a hostile config or `--set` are escaped, as repr() shows them."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class DataError(ConfigError):
    """A dataset that cannot be found, read or fitted to the declared model."""


class RunError(KexpError):
    """A run folder that cannot be created, read or resumed."""


class TrainingFailed(KexpError):
    """Training stopped on its own (e.g. a NaN loss); the run folder says why."""


class Interrupted(KexpError):
    """Training was interrupted by SIGINT/SIGTERM; the run folder keeps what was done."""

    exit_code = 130
