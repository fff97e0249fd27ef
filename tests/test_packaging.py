"""pyproject.toml against what kexp tells users to install."""

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def test_every_extra_an_error_message_or_readme_names_is_defined():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    texts = [p.read_text() for p in sorted((ROOT / "kexp").rglob("*.py"))] + [(ROOT / "README.md").read_text()]
    named = {name for text in texts for name in re.findall(r'kexp\[([a-z0-9_,-]+)\]', text)}
    named = {part for name in named for part in name.split(",")}
    assert {"jax", "torch", "optuna", "ray", "tensorboard", "mlflow"} <= named  # the search finds them
    assert named <= set(extras), f"named but not defined: {sorted(named - set(extras))}"


def test_the_test_extra_installs_every_optional_backend_and_tool_the_tests_use_except_torch():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    test = " ".join(extras["test"])
    for extra in ("jax", "optuna", "ray", "tensorboard", "mlflow"):
        assert re.search(rf"kexp\[[^\]]*\b{extra}\b", test), extra
