"""Validate filter predicates before Spark starts: one deterministic boolean expression each.

Predicates come from a config file, so they are untrusted text that will reach Spark's SQL
parser. Each one is parsed with sqlglot (Spark dialect) and checked against allow-lists: node
types, functions and column names. Anything else (statements, `;`, subqueries, comments,
non-deterministic or unknown / user-defined functions, unknown or qualified columns) is
rejected with a message naming the predicate and the offending part. The filter job checks
the result once more with Spark's analyzer (see spark_jobs/filter.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

__all__ = [
    "ALLOWED_FUNCTIONS",
    "NONDETERMINISTIC_FUNCTIONS",
    "PredicateError",
    "ValidPredicate",
    "predicate_label",
    "validate_predicate",
    "validate_predicates",
]


class PredicateError(ValueError):
    """A predicate the user must fix; the message names it and the offending part."""


@dataclass(frozen=True)
class ValidPredicate:
    """A predicate that passed validation: the text as given, the columns it reads, and the
    name of the preset predicate it came from (`datacomp_basic.english`; None if hand-written)."""

    text: str
    columns: tuple[str, ...]
    name: str | None = None

    @property
    def label(self) -> str:
        """How statistics, `why` and `costs` show it: `name: text`, or the text alone."""
        return predicate_label(self.text, self.name)


def predicate_label(text: str, name: str | None) -> str:
    """`datacomp_basic.english: caption_language = 'en'` for a preset's predicate, else text."""
    return f"{name}: {text}" if name else text


# Deterministic functions a row filter may call, by sqlglot node class (Spark spellings that
# map to each: abs, round, sqrt, ln/log/log10/log2, pow/power, lower/lcase, length/char_length,
# substr/substring, trim/ltrim/rtrim, instr/locate, rlike/regexp_like, size/array_size, ...).
_ALLOWED_FUNC_NODES: frozenset[str] = frozenset(
    {
        "Abs", "Round", "Floor", "Ceil", "Sqrt", "Ln", "Log", "Exp", "Pow", "Sign", "Greatest",
        "Least", "Coalesce", "Nullif", "If", "Case", "Nanvl", "IsNan", "Cast", "TryCast",
        "SafeDivide", "Lower", "Upper", "Length", "BitLength", "Substring", "Trim", "Concat",
        "StartsWith", "EndsWith", "Contains", "StrPosition", "RegexpLike", "RegexpExtract",
        "Left", "Right", "Ascii", "Hex", "MD5", "SHA2", "ArraySize", "ArrayContains",
        "JSONExtractScalar", "JSONExtract", "Year", "Month", "Day", "DayOfMonth", "Hour",
        "TsOrDsToDate", "DateDiff", "WidthBucket",
    }
)  # fmt: skip
# Spark built-ins sqlglot does not model (it parses them as anonymous functions).
_ALLOWED_ANONYMOUS: frozenset[str] = frozenset(
    {"octet_length", "cardinality", "isnull", "isnotnull", "pmod", "bround", "json_array_length"}
)
ALLOWED_FUNCTIONS: frozenset[str] = frozenset(
    {
        "abs", "round", "bround", "floor", "ceil", "ceiling", "sqrt", "ln", "log", "log10",
        "log2", "exp", "pow", "power", "sign", "signum", "greatest", "least", "coalesce", "nvl",
        "ifnull", "nullif", "if", "nanvl", "isnan", "isnull", "isnotnull", "cast", "try_cast",
        "try_divide", "pmod", "lower", "upper", "lcase", "ucase", "length", "char_length",
        "character_length", "octet_length", "bit_length", "substr", "substring", "trim",
        "ltrim", "rtrim", "concat", "startswith", "endswith", "contains", "instr", "locate",
        "rlike", "regexp_like", "regexp_extract", "left", "right", "ascii", "hex", "md5",
        "sha2", "size", "cardinality", "array_size", "array_contains", "get_json_object",
        "json_array_length", "year", "month", "day", "dayofmonth", "hour", "to_date",
        "datediff", "width_bucket",
    }
)  # fmt: skip
"""The Spark function names a predicate may use (for messages and the README)."""

NONDETERMINISTIC_FUNCTIONS: frozenset[str] = frozenset(
    {
        "rand", "randn", "random", "uuid", "shuffle", "uniform", "randstr", "current_timestamp",
        "current_date", "current_time", "now", "localtimestamp", "current_timezone",
        "unix_timestamp", "monotonically_increasing_id", "spark_partition_id",
        "input_file_name", "input_file_block_start", "input_file_block_length", "current_user",
        "user", "session_user", "current_catalog", "current_database", "current_schema",
        "reflect", "java_method", "try_reflect", "assert_true", "raise_error",
    }
)  # fmt: skip
"""Functions that are non-deterministic or have side effects: always rejected."""

_NONDETERMINISTIC_NODES: frozenset[str] = frozenset(
    {
        "Rand", "Randn", "Uuid", "Shuffle", "Uniform", "Randstr", "CurrentTimestamp",
        "CurrentDate", "CurrentTime", "CurrentDatetime", "CurrentUser", "CurrentSchema",
        "CurrentCatalog", "StrToUnix", "Localtimestamp", "CurrentTimezone",
    }
)  # fmt: skip
_AGGREGATE_NODES = (exp.AggFunc,)
# Non-function nodes an expression may contain.
_ALLOWED_NODES: tuple[type[exp.Expression], ...] = (
    exp.Column, exp.Identifier, exp.Literal, exp.Boolean, exp.Null, exp.Paren, exp.Neg,
    exp.Not, exp.And, exp.Or, exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE,
    exp.NullSafeEQ, exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.IntDiv, exp.Between,
    exp.In, exp.Is, exp.Like, exp.ILike, exp.DataType, exp.DataTypeParam, exp.Bracket,
    exp.JSONPath, exp.JSONPathPart,
)  # fmt: skip
# What a boolean predicate's outermost node may be.
_BOOLEAN_ROOTS: tuple[type[exp.Expression], ...] = (
    exp.Not, exp.And, exp.Or, exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE,
    exp.NullSafeEQ, exp.Between, exp.In, exp.Is, exp.Like, exp.ILike, exp.RegexpLike,
    exp.Boolean, exp.StartsWith, exp.EndsWith, exp.Contains, exp.ArrayContains, exp.IsNan,
    exp.Case, exp.If,  # their type is checked by Spark's analyzer at run time
)  # fmt: skip
_BOOLEAN_ANONYMOUS = frozenset({"isnull", "isnotnull"})
_STATEMENTS = (exp.Query, exp.Command, exp.DDL, exp.DML, exp.Drop, exp.Use, exp.Set)


def _snippet(node: exp.Expr) -> str:
    try:
        text = node.sql(dialect="spark")
    except Exception:  # noqa: BLE001 - only for the message
        text = type(node).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def _func_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return node.sql_name().lower()


def _fail(predicate: str, what: str) -> PredicateError:
    return PredicateError(f"filter predicate {predicate!r}: {what}")


def _parse(predicate: str) -> exp.Expr:
    try:
        tokens = sqlglot.Dialect.get_or_raise("spark").tokenize(predicate)
    except SqlglotError as exc:
        raise _fail(predicate, f"cannot be read as SQL ({exc})") from None
    for tok in tokens:
        if tok.token_type == TokenType.SEMICOLON:
            raise _fail(predicate, "contains `;`: one boolean expression only, no statements")
        if tok.comments:
            raise _fail(predicate, "contains a SQL comment; remove it")
    try:
        trees = sqlglot.parse(predicate, read="spark")
    except SqlglotError as exc:
        first = str(exc).splitlines()[0]
        raise _fail(predicate, f"is not a valid SQL expression ({first})") from None
    found = [t for t in trees if t is not None]
    if len(found) != 1:
        raise _fail(predicate, "must be exactly one boolean expression")
    return found[0]


def validate_predicate(predicate: str, columns: Iterable[str]) -> ValidPredicate:
    """Check one predicate: a single deterministic boolean expression over `columns`."""
    if not isinstance(predicate, str) or not predicate.strip():
        raise PredicateError(f"filter predicate {predicate!r}: empty; write e.g. `width >= 256`")
    known = {c.lower() for c in columns}
    tree = _parse(predicate)
    if isinstance(tree, _STATEMENTS) and not isinstance(tree, exp.Subquery):
        kind = "a subquery" if isinstance(tree, exp.Query) else "a statement"
        raise _fail(predicate, f"is {kind} ({_snippet(tree)}), not a boolean expression")
    sub = tree.find(exp.Query, exp.Subquery)
    if sub is not None:
        raise _fail(predicate, f"subqueries are not allowed: `{_snippet(sub)}`")
    used: list[str] = []
    for node in tree.walk():
        if isinstance(node, (exp.Query, exp.Subquery)):
            raise _fail(predicate, f"subqueries are not allowed: `{_snippet(node)}`")
        if isinstance(node, _STATEMENTS):
            raise _fail(predicate, f"statements are not allowed: `{_snippet(node)}`")
        if isinstance(node, _ALLOWED_NODES) and not isinstance(node, exp.Column):
            continue  # operators (AND, >=, BETWEEN, ...), literals, types
        if isinstance(node, exp.Func):
            name = _func_name(node)
            cls = type(node).__name__
            if cls in _NONDETERMINISTIC_NODES or name in NONDETERMINISTIC_FUNCTIONS:
                raise _fail(
                    predicate,
                    f"`{_snippet(node)}` is non-deterministic; a filter must give the same "
                    "rows on every run",
                )
            if isinstance(node, _AGGREGATE_NODES):
                raise _fail(predicate, f"aggregate `{_snippet(node)}` is not a row filter")
            if isinstance(node, exp.Anonymous):
                if name not in _ALLOWED_ANONYMOUS:
                    raise _fail(
                        predicate,
                        f"unknown or user-defined function `{node.name}`; allowed: "
                        + ", ".join(sorted(ALLOWED_FUNCTIONS)),
                    )
            elif cls not in _ALLOWED_FUNC_NODES:
                raise _fail(
                    predicate,
                    f"function `{_snippet(node)}` is not on the allow-list; allowed: "
                    + ", ".join(sorted(ALLOWED_FUNCTIONS)),
                )
            continue
        if isinstance(node, exp.Column):
            if node.table or node.args.get("db") or node.args.get("catalog"):
                raise _fail(
                    predicate, f"qualified column `{_snippet(node)}`; use the bare column name"
                )
            name = str(node.name)
            if isinstance(node.this, exp.Star) or name == "*":
                raise _fail(predicate, "`*` is not a column")
            if name.lower() not in known:
                raise _fail(
                    predicate,
                    f"unknown column `{name}`; known columns: " + ", ".join(sorted(known)),
                )
            used.append(name.lower())
            continue
        raise _fail(
            predicate, f"`{_snippet(node)}` ({type(node).__name__}) is not allowed in a filter"
        )
    root = tree
    while isinstance(root, exp.Paren):
        root = root.this
    boolean = isinstance(root, _BOOLEAN_ROOTS) or (
        isinstance(root, exp.Anonymous) and str(root.name).lower() in _BOOLEAN_ANONYMOUS
    )
    if not boolean:
        raise _fail(
            predicate,
            f"`{_snippet(root)}` is not a boolean expression; compare it, e.g. `... >= 5`",
        )
    return ValidPredicate(text=predicate.strip(), columns=tuple(dict.fromkeys(used)))


def validate_predicates(predicates: Iterable[str], columns: Iterable[str]) -> list[ValidPredicate]:
    """Validate every predicate (all errors reported together, one per line)."""
    cols = list(columns)
    out: list[ValidPredicate] = []
    errors: list[str] = []
    for p in predicates:
        try:
            out.append(validate_predicate(p, cols))
        except PredicateError as exc:
            errors.append(str(exc))
    if errors:
        raise PredicateError("\n".join(errors))
    return out


def _normal(text: str) -> str:
    return " ".join(text.split()).lower()


def apply_what_if(
    current: Iterable[str], changes: Iterable[str], columns: Iterable[str]
) -> list[str]:
    """The predicate list after what-if edits, each validated like the filter's own.

    An edit is `OLD => NEW` (replace the predicate written OLD; an empty NEW removes it) or
    just `NEW`: it replaces the one current predicate that reads the same columns (e.g.
    `aesthetic_score >= 4.5` replaces `aesthetic_score >= 5`), or is added when none does.
    """
    cols = list(columns)
    out = [p.strip() for p in current]
    for change in changes:
        old, sep, new = change.partition("=>")
        if sep:
            at = [i for i, p in enumerate(out) if _normal(p) == _normal(old)]
            if not at:
                raise PredicateError(
                    f"what-if {change!r}: no current predicate is written {old.strip()!r}; "
                    "current: " + "; ".join(out)
                )
            if new.strip():
                out[at[0]] = validate_predicate(new, cols).text
            else:
                del out[at[0]]
            continue
        valid = validate_predicate(change, cols)
        same = [
            i
            for i, p in enumerate(out)
            if set(validate_predicate(p, cols).columns) == set(valid.columns)
        ]
        if len(same) > 1:
            raise PredicateError(
                f"what-if {change!r}: several predicates read {sorted(valid.columns)}; "
                "say which with `OLD => NEW`"
            )
        if same:
            out[same[0]] = valid.text
        else:
            out.append(valid.text)
    return out
