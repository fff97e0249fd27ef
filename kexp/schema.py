"""The JSON Schema of a config (`kexp schema`), for editors: YAML language servers (VS Code's YAML
extension and others) complete and check keys as you type from it.

Generated from the pydantic model in kexp.config, so it cannot drift from what `kexp validate`
accepts; the schema is looser only where JSON Schema cannot say what kexp checks (Keras names,
arguments of Keras objects). Each key gets
- its default (a section's default as the mapping it stands for: `training: {epochs: 10, ...}`);
- its description: the comment that documents the field in kexp/config.py (`epochs: PosInt = 10  #
  ...`), a comment-only line right after it continuing it, read from the source as pydantic reads
  attribute docstrings; a section's description is its class docstring.

The repository keeps the output as kexp.schema.json (a test keeps the two equal); the shipped configs
point at it with the modeline `# yaml-language-server: $schema=../kexp.schema.json`.
"""

from __future__ import annotations

import inspect
import io
import json
import tokenize
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema

from kexp import config

DIALECT = "https://json-schema.org/draft/2020-12/schema"
FILE_NAME = "kexp.schema.json"


class _WithDefaults(GenerateJsonSchema):
    """pydantic's generator, writing the value of an argument-free `default_factory` as the default."""

    def default_schema(self, schema):
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            schema = {key: value for key, value in schema.items() if key != "default_factory"}
            schema["default"] = factory()
        return super().default_schema(schema)


def _field_comments(cls: type) -> dict[str, str]:
    """Field name -> the comment that documents it in the class body: its trailing comment, joined with
    the comment-only lines right after it. Empty when the source cannot be read."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comment_at: dict[int, str] = {}
    code_lines: set[int] = set()
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT:
                comment_at[token.start[0]] = token.string.lstrip("#").strip()
            elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
                code_lines.add(token.start[0])
    except (tokenize.TokenError, SyntaxError):
        return {}
    found: dict[str, list[str]] = {}
    current = None  # the field whose comment a comment-only line continues
    for number, line in enumerate(source.splitlines(), start=1):
        if number in code_lines:
            head = line[4:].split(":", 1)[0] if line.startswith("    ") and line[4:5] != " " else ""
            text = comment_at.get(number, "")
            current = head if head.isidentifier() and text and not text.startswith("type:") else None
            if current is not None:
                found[current] = [text]
        elif number in comment_at and current is not None:
            found[current].append(comment_at[number])
        else:
            current = None
    fields = getattr(cls, "model_fields", {})
    return {name: " ".join(parts) for name, parts in found.items() if name in fields}


def _comments(cls: type) -> dict[str, str]:
    """`_field_comments` over the class and its bases (a subclass's own comment wins)."""
    merged: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        if isinstance(base, type) and issubclass(base, BaseModel) and base.__module__ == config.__name__:
            merged.update(_field_comments(base))
    return merged


def _describe(node: dict, cls: type) -> None:
    properties = node.get("properties", {})
    for name, text in _comments(cls).items():
        if name in properties and "description" not in properties[name]:
            properties[name]["description"] = text


def config_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a config file, as a mapping."""
    schema = config.Config.model_json_schema(schema_generator=_WithDefaults)
    models = {name: cls for name, cls in vars(config).items()
              if isinstance(cls, type) and issubclass(cls, BaseModel) and cls.__module__ == config.__name__}
    for name, node in schema.get("$defs", {}).items():
        if name in models:
            _describe(node, models[name])
    _describe(schema, config.Config)
    # What kexp.config fills in before the model sees the file: `name` defaults to the file's name,
    # and a validation: section without `scheme` is a hold-out (so `scheme` picks no member there).
    schema["required"] = [key for key in schema.get("required", []) if key != "name"]
    holdout = schema["$defs"]["Holdout"]
    holdout["required"] = [key for key in holdout.get("required", []) if key != "scheme"]
    holdout["properties"]["scheme"]["default"] = "holdout"
    schema["properties"]["validation"].pop("discriminator", None)
    return {"$schema": DIALECT, "title": "kexp experiment config", **schema}


def schema_text() -> str:
    """The schema as `kexp schema` prints it and kexp.schema.json holds it (stable, sorted keys)."""
    return json.dumps(config_schema(), indent=2, sort_keys=True) + "\n"
