"""Alert rule expressions: CEL (the ``cel`` package, a Rust implementation), compiled and vetted once.

CEL has no ``eval``, no imports, no attribute access into Python objects and no loops other than its
bounded comprehension macros, which is why custom rules use it. On top of what CEL refuses itself,
:func:`compile_rule` refuses what would compile but has no business in a rule: names starting with
``_`` (``x.__class__`` compiles and fails only at run time), names that are not documented figures
(:mod:`.figures`), functions outside a small whitelist, and expressions too long or too deeply nested
to review. Every refusal is an :class:`~rof_pipelines.errors.AlertRuleError` naming the rule and the
line/column (1-based) where the problem starts, so config load can point at it.

Types: CEL does not coerce between ``int`` and ``double`` in arithmetic (``x - 1`` with ``x`` a
double fails; comparisons such as ``x > 1`` work). The snapshot builder's contract is therefore
simple: a figure :data:`~.figures.FIGURES` types as ``double`` is passed as a Python ``float``, one
typed ``int`` as an ``int``, ``string`` as ``str``, ``bool`` as ``bool``; rule authors write
double literals (``0.5``, ``300.0``) in arithmetic with double figures.
"""

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cel

from rof_pipelines.core.alerts.figures import COLLECTIONS, KINDS, variables_for
from rof_pipelines.core.alerts.model import SEVERITIES, RuleSpec
from rof_pipelines.core.alerts.templates import check_template
from rof_pipelines.errors import AlertRuleError, FigureNotSet

MAX_EXPR_CHARS = 2000
MAX_NESTING = 32  # brackets inside brackets; cel's own parser stops at 96 with an obscure message
MAX_MACRO_NESTING = 2  # a comprehension inside a comprehension: n*m iterations, no deeper
MAX_MACROS = 6  # comprehensions per expression
_EXCERPT = 120  # never echo more than this much of a message (expressions may be long)

# What cel 0.10 implements natively and cannot reach outside the expression (checked by the tests:
# every name here executes). ``bool()``, ``min``/``max`` and the ``math.*``/string extensions are
# not native (cel.stdlib registers them as Python callbacks) and are deliberately left out.
ALLOWED_FUNCTIONS: frozenset[str] = frozenset(
    {
        "size",
        "int",
        "uint",
        "double",
        "string",
        "bytes",
        "type",
        "dyn",
        "contains",
        "startsWith",
        "endsWith",
        "matches",  # Rust regex: linear time, no catastrophic backtracking
        "timestamp",
        "duration",
        "getFullYear",
        "getMonth",
        "getDayOfYear",
        "getDayOfMonth",
        "getDate",
        "getDayOfWeek",
        "getHours",
        "getMinutes",
        "getSeconds",
        "getMilliseconds",
    }
)
# CEL's operator overload names as Program.functions() reports them.
ALLOWED_OPERATORS: frozenset[str] = frozenset(
    {
        "_==_",
        "_!=_",
        "_<_",
        "_<=_",
        "_>_",
        "_>=_",
        "_&&_",
        "_||_",
        "!_",
        "-_",
        "_?_:_",
        "_+_",
        "_-_",
        "_*_",
        "_/_",
        "_%_",
        "_[_]",
        "@in",
        "@not_strictly_false",
    }
)
MACROS: frozenset[str] = frozenset({"all", "exists", "exists_one", "map", "filter"})
# CEL's type names read as identifiers (``type(x) == double``) but are no variables.
TYPE_NAMES: frozenset[str] = frozenset(
    {"bool", "int", "uint", "double", "string", "bytes", "list", "map", "null_type", "type"}
)
_CEL_ERROR = re.compile(r"ERROR: <input>:(\d+):(\d+): ([^\n]*)")
_EXPECTING = re.compile(r"\s*expecting \{.*?\}|\s*expecting <EOF>")


@dataclass(frozen=True)
class _Token:
    kind: str  # "ident", "string", "number", "punct"
    text: str
    line: int
    column: int


def _position(src: str, offset: int) -> tuple[int, int]:
    """1-based line and column of ``offset`` in ``src``."""
    line = src.count("\n", 0, offset) + 1
    return line, offset - (src.rfind("\n", 0, offset) + 1) + 1


def _tokens(src: str) -> list[_Token]:
    """A lexer just good enough to tell identifiers from string literals and comments (CEL does the
    real parsing; anything this lexer gets wrong, CEL refuses anyway)."""
    out: list[_Token] = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c.isspace():
            i += 1
            continue
        if src.startswith("//", i):
            end = src.find("\n", i)
            i = n if end < 0 else end
            continue
        start = i
        prefix = re.match(r"(?i)(rb|br|r|b)?(\"\"\"|'''|\"|')", src[i:])
        if prefix:  # at a token's start ``r"`` is always a raw-string prefix, never an identifier
            raw = "r" in (prefix.group(1) or "").lower()
            quote = prefix.group(2)
            i += prefix.end()
            while i < n and not src.startswith(quote, i):
                if src[i] == "\\" and not raw:
                    i += 1
                elif src[i] == "\n" and len(quote) == 1:
                    break
                i += 1
            i = min(n, i + len(quote))
            out.append(_Token("string", src[start:i], *_position(src, start)))
            continue
        if c.isalpha() or c == "_":
            while i < n and (src[i].isalnum() or src[i] == "_"):
                i += 1
            out.append(_Token("ident", src[start:i], *_position(src, start)))
            continue
        if c.isdigit():
            while i < n and (
                src[i].isalnum()
                or src[i] == "_"
                or (src[i] == "." and i + 1 < n and src[i + 1].isdigit())
                or (src[i] in "+-" and src[i - 1] in "eE" and not src[start:i].lower().startswith("0x"))
            ):
                i += 1
            out.append(_Token("number", src[start:i], *_position(src, start)))
            continue
        out.append(_Token("punct", c, *_position(src, start)))
        i += 1
    return out


def _clip(text: str, limit: int = _EXCERPT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _refuse(spec: RuleSpec, reason: str, token: _Token | None = None) -> AlertRuleError:
    line, column = (token.line, token.column) if token is not None else (None, None)
    return AlertRuleError(spec.name, reason, line, column)


def _check_shape(spec: RuleSpec, tokens: list[_Token]) -> None:
    """Private names, nesting and comprehension counts: what CEL would accept but a rule should not."""
    for tok in tokens:
        if tok.kind == "ident" and (tok.text.startswith("_") or "__" in tok.text):
            raise _refuse(
                spec,
                f"attribute access to private names is not allowed ({_clip(tok.text, 40)!r})",
                tok,
            )
    stack: list[bool] = []  # one entry per open bracket: whether it opens a comprehension macro
    macros = 0
    for i, tok in enumerate(tokens):
        if tok.kind != "punct":
            continue
        if tok.text in "([{":
            is_macro = (
                tok.text == "("
                and i >= 2
                and tokens[i - 1].kind == "ident"
                and tokens[i - 1].text in MACROS
                and tokens[i - 2].text == "."
            )
            if is_macro:
                macros += 1
                if macros > MAX_MACROS:
                    raise _refuse(spec, f"more than {MAX_MACROS} comprehensions", tokens[i - 1])
                if sum(stack) >= MAX_MACRO_NESTING:
                    raise _refuse(
                        spec, f"comprehensions nested more than {MAX_MACRO_NESTING} deep", tokens[i - 1]
                    )
            stack.append(is_macro)
            if len(stack) > MAX_NESTING:
                raise _refuse(spec, f"brackets nested more than {MAX_NESTING} deep", tok)
        elif tok.text in ")]}" and stack:
            stack.pop()


def _bound_names(tokens: list[_Token]) -> set[str]:
    """Names bound by comprehension macros (``xs.exists(x, ...)`` binds ``x``)."""
    bound = set()
    for i in range(len(tokens) - 4):
        a, b, c, d, e = tokens[i : i + 5]
        if (
            a.text == "."
            and b.kind == "ident"
            and b.text in MACROS
            and c.text == "("
            and d.kind == "ident"
            and e.text == ","
        ):
            bound.add(d.text)
    return bound


def _first_name(tokens: list[_Token], name: str, call: bool = False) -> _Token | None:
    """The first use of ``name`` as a variable (not after ``.``) or, with ``call``, as a function."""
    for i, tok in enumerate(tokens):
        if tok.kind != "ident" or tok.text != name:
            continue
        after_dot = i > 0 and tokens[i - 1].text == "."
        followed_by_call = i + 1 < len(tokens) and tokens[i + 1].text == "("
        if call and followed_by_call:
            return tok
        if not call and not after_dot:
            return tok
    return None


def _parse_error(spec: RuleSpec, message: str) -> AlertRuleError:
    """The first ``ERROR: <input>:L:C: reason`` of cel's message, without echoing the expression."""
    match = _CEL_ERROR.search(message)
    if match is None:
        return AlertRuleError(spec.name, "does not compile: " + _clip(message.split("\n")[0]))
    reason = _EXPECTING.sub("", match.group(3)).strip()
    if "Recursion limit" in reason:
        reason = "nested too deeply"
    return AlertRuleError(spec.name, _clip(reason), int(match.group(1)), int(match.group(2)))


@dataclass(frozen=True)
class CompiledRule:
    """A vetted rule, ready to evaluate on one entity's variables."""

    spec: RuleSpec
    program: Any = field(repr=False, compare=False)  # cel.Program
    names: frozenset[str] = frozenset()  # the free variables the expression reads

    @property
    def name(self) -> str:
        return self.spec.name

    def evaluate(self, variables: Mapping[str, Any]) -> bool:
        """True while the condition holds. ValueError (short message naming the rule) when it cannot
        be decided: a figure not set, a type error, a division by zero, a result that is no bool."""
        # Only the names the expression reads are converted to CEL values: a global rule reading
        # ``now`` need not convert every market's figures.
        context = {name: variables[name] for name in self.names if name in variables}
        try:
            result = self.program.execute(context)
        except Exception as exc:  # cel raises RuntimeError, KeyError, TypeError, ZeroDivisionError...
            reason = _describe(exc)
            kind = FigureNotSet if reason.startswith("figure ") else ValueError
            raise kind(f"alert rule {self.spec.name!r}: {reason}") from None
        if not isinstance(result, bool):
            raise ValueError(
                f"alert rule {self.spec.name!r}: the expression gave {type(result).__name__} "
                f"{_clip(repr(result), 40)}, not true/false"
            )
        return result


def _describe(exc: BaseException) -> str:
    text = str(exc)
    undefined = re.match(r"Undefined variable or function: '([^']*)'", text)
    if undefined:
        return f"figure {undefined.group(1)!r} is not set"
    if isinstance(exc, KeyError):
        return f"no key or field {_clip(text, 60)}"
    if isinstance(exc, ZeroDivisionError):
        return "division by zero"
    if isinstance(exc, TypeError):
        return "type error: " + _clip(text.split(". ")[0], 100)
    return f"{type(exc).__name__}: {_clip(text.split('. ')[0], 100)}"


def compile_rule(spec: RuleSpec) -> CompiledRule:
    """Compile and vet one rule (AlertRuleError with the rule's name, reason and position)."""
    if spec.each not in KINDS:
        raise AlertRuleError(spec.name, f"each: {spec.each!r} is not one of {', '.join(KINDS)}")
    if spec.severity not in SEVERITIES:
        raise AlertRuleError(spec.name, f"severity {spec.severity!r} is not one of {', '.join(SEVERITIES)}")
    if spec.absent not in ("resolve", "keep"):
        raise AlertRuleError(spec.name, f"absent {spec.absent!r} is not 'resolve' or 'keep'")
    if spec.for_s < 0 or spec.cooldown_s < 0:
        raise AlertRuleError(spec.name, "for and cooldown must not be negative")
    src = spec.expr
    if not isinstance(src, str) or not src.strip():
        raise AlertRuleError(spec.name, "the expression is empty")
    if len(src) > MAX_EXPR_CHARS:
        line, column = _position(src, MAX_EXPR_CHARS)
        raise AlertRuleError(
            spec.name, f"the expression is {len(src)} characters, at most {MAX_EXPR_CHARS}", line, column
        )
    tokens = _tokens(src)
    _check_shape(spec, tokens)
    try:
        program = cel.compile(src)
    except Exception as exc:  # ValueError with cel's parser messages
        raise _parse_error(spec, str(exc)) from None

    for function in sorted(program.functions()):
        if function in ALLOWED_FUNCTIONS or function in ALLOWED_OPERATORS:
            continue
        tok = _first_name(tokens, function, call=True)
        hint = ", ".join(sorted(ALLOWED_FUNCTIONS))
        what = f"function {function!r}" if tok is not None else f"operator {function!r}"
        raise _refuse(spec, f"{what} is not available (functions: {hint})", tok)

    allowed = variables_for(spec.each)
    bound = _bound_names(tokens)
    names = set(program.variables()) - bound - TYPE_NAMES
    unknown = sorted(
        (name for name in names if name not in allowed),
        key=lambda name: (tok.line, tok.column) if (tok := _first_name(tokens, name)) else (0, 0),
    )
    if unknown:
        tok = _first_name(tokens, unknown[0])
        close = difflib.get_close_matches(unknown[0], sorted(allowed), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise _refuse(
            spec,
            f"unknown name {_clip(unknown[0], 40)!r} ({hint}`rof alerts figures` lists what each: "
            f"{spec.each} may read)",
            tok,
        )
    if spec.message:
        check_template(spec.name, spec.message, spec.each)
    return CompiledRule(spec=spec, program=program, names=frozenset(names & set(allowed)))


def collections_read(rule: CompiledRule) -> frozenset[str]:
    """The entity kinds whose collections (``markets``, ``pools``, ...) the rule reads."""
    return frozenset(kind for kind, collection in COLLECTIONS.items() if collection in rule.names)


__all__ = [
    "ALLOWED_FUNCTIONS",
    "ALLOWED_OPERATORS",
    "MAX_EXPR_CHARS",
    "CompiledRule",
    "collections_read",
    "compile_rule",
]
