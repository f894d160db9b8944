"""
Prompt templates with Jinja2: ``input.template_file`` (``--template FILE``).

The template builds the prompt text of every row that has no ``messages``; each
column is a variable (``{{ text }}``), the whole row is ``row`` (for column names
that are not identifiers: ``{{ row["review text"] }}``), and loops, conditions,
``{% set %}`` and ``{% include %}`` (beside the template) work, so few-shot examples
can live in the template or in a JSONL column. Blocks trim their own line
(``trim_blocks``, ``lstrip_blocks``), so a ``{% for %}`` line leaves no blank line.

It is checked before anything is sent: syntax, then every variable it reads against
the columns (``StrictUndefined``: a missing value is an error, never an empty
string); the messages name the template's file and line.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta, nodes

from batchrunner.errors import ConfigError

#: Variables every row has besides its columns.
PROVIDED = frozenset({"row"})


class PromptTemplate:
    """A Jinja2 template file (*path*, set by *source*), parsed and checked."""

    def __init__(self, path: str, source: str) -> None:
        self.path = path
        file = Path(path)
        if not file.is_file():
            msg = f"template file {path!r} ({source}) does not exist"
            raise ConfigError(msg)
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(file.parent),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
        )
        try:
            text = file.read_text(encoding="utf-8")
            tree = self._env.parse(text, file.name, path)
            self._template = self._env.get_template(file.name)
        except (OSError, UnicodeDecodeError) as exc:
            msg = f"template file {path!r} ({source}): cannot read it: {exc}"
            raise ConfigError(msg) from exc
        except jinja2.TemplateSyntaxError as exc:
            where = f"{exc.filename or path}:{exc.lineno}"
            msg = f"{where}: template syntax error: {exc.message}"
            raise ConfigError(msg) from None
        #: Each column the template reads → the line it first reads it on.
        self.names = _first_uses(tree)

    def check_columns(self, columns: Iterable[str], where: str) -> None:
        """A ``ConfigError`` when the template reads a variable *columns* lack."""
        known = set(columns)
        for name, line in self.names.items():
            if name not in known:
                msg = (
                    f"{self.path}:{line}: the template uses {name!r}, but {where} has"
                    f" no such column; the columns are {_listed(known)}"
                )
                raise ConfigError(msg)

    def render(self, fields: Mapping[str, Any]) -> str:
        """The prompt for a row with *fields*; a ``ValueError`` says what failed."""
        for name, line in self.names.items():
            if name not in fields:
                msg = (
                    f"the template {self.path}:{line} uses {name!r}, but this row has"
                    f" no such column; its columns are {_listed(fields)}"
                )
                raise ValueError(msg)
        try:
            text = self._template.render({"row": fields, **fields})
        except (jinja2.TemplateError, ArithmeticError, LookupError) as exc:
            raise ValueError(self._failure(exc)) from None
        except (TypeError, ValueError, AttributeError) as exc:  # from filters
            raise ValueError(self._failure(exc)) from None
        if not text.strip():
            msg = f"the template {self.path} made an empty prompt for this row"
            raise ValueError(msg)
        return text

    def _failure(self, exc: Exception) -> str:
        # Jinja maps the frames of a template's code back onto its file and lines
        # (the loader names files by their path, so includes are named right).
        frames = [
            frame
            for frame in traceback.extract_tb(exc.__traceback__)
            if not frame.filename.endswith(".py") and not frame.filename.startswith("<")
        ]
        place = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else self.path
        return f"the template {place} failed on this row: {exc}"


def _first_uses(tree: nodes.Template) -> dict[str, int]:
    """The undeclared variables of *tree* (less ``row``), each with its first line."""
    undeclared = meta.find_undeclared_variables(tree) - PROVIDED
    lines: dict[str, int] = {}
    for node in tree.find_all(nodes.Name):
        if node.ctx == "load" and node.name in undeclared:
            lines.setdefault(node.name, node.lineno)
    return dict(sorted(lines.items(), key=lambda item: item[1]))


def _listed(names: Iterable[str]) -> str:
    return ", ".join(repr(name) for name in names) or "(none)"
