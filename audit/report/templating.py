"""The report's Jinja2 environment: HTML escaping is the default, not a call to remember.

The templates live in ``audit/report/templates/`` (package data). Every ``{{ value }}`` in
them is escaped by autoescape, whatever the value; only a ``markupsafe.Markup`` passes as it
is, and the one place that makes any is ``html.trusted_assets`` (the page's own CSS and JS).
``finalize`` keeps what the old hand-written ``esc`` also did: ``None`` prints as nothing and
control characters show as U+FFFD, so a prompt cannot hide text from the reviewer.

Imported only by the HTML writer: ``import audit`` and the CLI never load Jinja2.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from jinja2.ext import Extension

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _finalize(value: Any) -> Any:
    if value is None:
        return ""
    if hasattr(value, "__html__"):  # Markup: already safe, escaping it again would show its tags
        return value
    text = value if isinstance(value, str) else str(value)
    # isprintable: a C-speed check that holds for nearly every value, so the regex runs on few
    return text if text.isprintable() else _CONTROL.sub("\ufffd", text)


class JoinLines(Extension):
    """Templates are written one element a line, indented, and the page comes out on one
    line as it always has (no stray whitespace between inline elements): each line's
    indentation and line break are dropped from the template's source, never from a value.
    A space that matters is therefore written inside a line."""

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        return "".join(line.strip() for line in source.splitlines())


class _Environment(Environment):
    """``{{ card.uri }}`` on the plain dicts html.py builds looks the key up first: Jinja's
    default tries the attribute first, and a failed ``getattr`` on every field of 5,000 cards
    costs more than the rendering itself. A key also wins over a dict method of that name."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)


@cache
def environment() -> Environment:
    """The one environment the report renders with."""
    return make_environment()


def make_environment(*, autoescape: bool = True) -> Environment:
    """``autoescape=False`` exists for the test that proves a page rendered without escaping
    is caught (tests/test_report_escaping.py); the report itself always uses ``environment()``."""
    return _Environment(
        loader=PackageLoader("audit.report", "templates"),
        autoescape=autoescape,  # every template is HTML
        undefined=StrictUndefined,  # a misspelt variable is an error, not an empty field
        finalize=_finalize,
        extensions=[JoinLines],
        auto_reload=False,
    )


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)
