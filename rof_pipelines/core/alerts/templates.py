"""Alert message templates: ``"{market}: best fitness {ga_best_fitness:.2f}"``.

``str.format`` itself would let a template reach attributes and items (``{x.__class__}``,
``{x[0]}``), so templates are checked at config load to name only documented figures as plain
identifiers, and rendered field by field here (never with ``str.format`` on the whole template).
Rendering never raises: an alert must go out even when a figure is missing (``?``) or a format spec
does not suit the value (the value as ``str``).
"""

import string
from collections.abc import Mapping
from typing import Any

from rof_pipelines.core.alerts.figures import variables_for
from rof_pipelines.errors import AlertRuleError

MAX_MESSAGE_CHARS = 2000
MISSING = "?"
_SAMPLES: dict[str, Any] = {"double": 0.0, "int": 0, "string": "", "bool": False, "map": {}}
_FORMATTER = string.Formatter()


def _field_offsets(template: str) -> list[int]:
    """Offsets of each replacement field's ``{`` (``{{`` is a literal brace), in order."""
    out, i, n = [], 0, len(template)
    while i < n:
        if template.startswith("{{", i) or template.startswith("}}", i):
            i += 2
            continue
        if template[i] == "{":
            out.append(i)
            depth = 0
            while i < n:  # skip to the matching "}" (a format spec may nest one level of braces)
                if template[i] == "{":
                    depth += 1
                elif template[i] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                i += 1
        i += 1
    return out


def _line_column(template: str, offset: int) -> tuple[int, int]:
    line = template.count("\n", 0, offset) + 1
    return line, offset - (template.rfind("\n", 0, offset) + 1) + 1


def check_template(rule: str, template: str, each: str) -> None:
    """Refuse a template naming anything but the figures of ``each`` as plain identifiers."""
    if len(template) > MAX_MESSAGE_CHARS:
        raise AlertRuleError(rule, f"message: {len(template)} characters, at most {MAX_MESSAGE_CHARS}")
    try:
        parts = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise AlertRuleError(rule, f"message: {exc} (write {{{{ and }}}} for literal braces)") from None
    allowed = variables_for(each)
    offsets = iter(_field_offsets(template))
    for _literal, name, spec, conversion in parts:
        if name is None:
            continue
        line, column = _line_column(template, next(offsets, 0))

        def refuse(reason: str, line: int = line, column: int = column) -> AlertRuleError:
            return AlertRuleError(rule, f"message: {reason}", line, column)

        shown = name if len(name) <= 40 else name[:39] + "…"
        if not name:
            raise refuse("empty placeholder {} (name a figure)")
        if not name.isidentifier():
            raise refuse(f"placeholder {{{shown}}} must be a plain figure name (no '.', '[' or spaces)")
        if name.startswith("_"):
            raise refuse(f"placeholder {{{shown}}}: private names are not allowed")
        if name not in allowed:
            raise refuse(f"unknown figure {{{shown}}} (each {each}: {', '.join(sorted(allowed))})")
        if conversion is not None:
            raise refuse(f"placeholder {{{shown}!{conversion}}}: conversions are not allowed")
        if spec and ("{" in spec or "}" in spec):
            raise refuse(f"placeholder {{{shown}}}: nested fields in a format spec are not allowed")
        if spec:
            try:
                format(_SAMPLES.get(allowed[name], ""), spec)
            except (ValueError, TypeError):
                raise refuse(f"format spec {spec!r} does not suit a {allowed[name]}") from None


def render(template: str, values: Mapping[str, Any]) -> str:
    """The message for these figures; never raises (missing: ``?``; unsuitable spec: ``str``)."""
    try:
        parts = list(_FORMATTER.parse(template))
    except ValueError:
        return _clip(template)
    out: list[str] = []
    for literal, name, spec, _conversion in parts:
        out.append(literal)
        if name is None:
            continue
        if name not in values or values[name] is None:
            out.append(MISSING)
            continue
        value = values[name]
        try:
            out.append(format(value, spec or ""))
        except Exception:  # a spec that does not suit the value's type
            try:
                out.append(str(value))
            except Exception:
                out.append(MISSING)
    return _clip("".join(out))


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


__all__ = ["MAX_MESSAGE_CHARS", "check_template", "render"]
