"""Lambda event filtering (the EventBridge pattern language subset Lambda accepts), for the local runner.

An event source mapping hands a record to its function only if the record matches one of its filter patterns
(`FilterCriteria.Filters[].Pattern`, ORed). The local runner applies the very patterns the template declares
(`s3sync.contract.COMPLETION_FILTERS`) with `matches_any`, so a filter that never fires in AWS never fires here.

Rules implemented (https://docs.aws.amazon.com/lambda/latest/dg/invocation-eventfiltering.html and the
EventBridge operator page):

- A pattern is an object; its fields are ANDed and matched against the same fields of the record, recursively.
- A leaf is a non-empty list of alternatives (ORed): exact JSON values (string, number, true/false, null) and
  operator objects. Values compare as JSON values: "0" matches "0" but not 0 (DynamoDB `N` values arrive as
  strings, so `{"N": ["0"]}` matches and `{"N": [{"numeric": ["=", 0]}]}` does not); true does not match 1.
- If the record value is a list, the leaf matches when any element matches.
- A field named in the pattern but missing from the record does not match, whatever the operator
  (`anything-but` included), except `{"exists": false}`. A nested pattern under a missing object is matched
  against an empty object, so only `exists: false` leaves can succeed there.
- Operators: `{"anything-but": [v, ...] | v | {"prefix"|"suffix"|"equals-ignore-case": s}}`,
  `{"exists": true|false}` (leaves only: an object value does not "exist" as a leaf), `{"prefix": s}`,
  `{"suffix": s}`, `{"equals-ignore-case": s}`, `{"wildcard": s}` (`*` only), `{"numeric": [op, n, ...]}` (JSON
  numbers only, op in < <= = >= >), and `"$or": [pattern, ...]` inside an object.
- A malformed pattern (leaf not a list, empty list, unknown operator) raises `PatternError`, as AWS rejects it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["PatternError", "filter_records", "matches", "matches_any", "parse_filter_criteria"]

_MISSING = object()
_NUMERIC_OPS = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "=": lambda a, b: a == b,
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
}


class PatternError(ValueError):
    """The pattern is not one Lambda would accept."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_equal(a: Any, b: Any) -> bool:
    """Equality of two JSON scalars: same JSON type and value (so "0" != 0 and true != 1)."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    return False


def _string_op(op: str, arg: Any, value: Any) -> bool:
    if not isinstance(arg, str):
        raise PatternError(f"{op!r} needs a string, got {arg!r}")
    if not isinstance(value, str):
        return False
    if op == "prefix":
        return value.startswith(arg)
    if op == "suffix":
        return value.endswith(arg)
    if op == "equals-ignore-case":
        return value.casefold() == arg.casefold()
    if op == "wildcard":
        regex = "^" + ".*".join(re.escape(p) for p in arg.split("*")) + "$"
        return re.match(regex, value, re.DOTALL) is not None
    raise PatternError(f"unknown operator {op!r}")  # pragma: no cover - callers pass known ops


def _numeric(arg: Any, value: Any) -> bool:
    if not isinstance(arg, list) or not arg or len(arg) % 2:
        raise PatternError(f"'numeric' needs [op, number, ...], got {arg!r}")
    checks = []
    for op, bound in zip(arg[::2], arg[1::2], strict=True):
        if op not in _NUMERIC_OPS or not _is_number(bound):
            raise PatternError(f"bad numeric comparison {op!r} {bound!r}")
        checks.append((op, bound))
    if not _is_number(value):
        return False
    return all(_NUMERIC_OPS[op](value, bound) for op, bound in checks)


def _anything_but(arg: Any, value: Any) -> bool:
    if isinstance(arg, Mapping):
        if len(arg) != 1:
            raise PatternError(f"'anything-but' takes one operator, got {arg!r}")
        ((op, inner),) = arg.items()
        if op not in ("prefix", "suffix", "equals-ignore-case", "wildcard"):
            raise PatternError(f"'anything-but' does not take {op!r}")
        if isinstance(inner, list):
            return isinstance(value, str) and not any(_string_op(op, s, value) for s in inner)
        return isinstance(value, str) and not _string_op(op, inner, value)
    excluded = arg if isinstance(arg, list) else [arg]
    if not excluded:
        raise PatternError("'anything-but' needs at least one value")
    for v in excluded:
        if isinstance(v, (Mapping, list)):
            raise PatternError(f"'anything-but' values must be scalars, got {v!r}")
    return not any(_json_equal(v, value) for v in excluded)


def _match_alternative(alt: Any, value: Any) -> bool:
    """One entry of a leaf list against one present, non-object record value."""
    if not isinstance(alt, Mapping):
        if isinstance(alt, list):
            raise PatternError(f"nested list in a pattern leaf: {alt!r}")
        return _json_equal(alt, value)
    if len(alt) != 1:
        raise PatternError(f"an operator object has exactly one key, got {alt!r}")
    ((op, arg),) = alt.items()
    if op == "exists":
        if not isinstance(arg, bool):
            raise PatternError(f"'exists' takes true or false, got {arg!r}")
        return arg
    if op == "anything-but":
        return _anything_but(arg, value)
    if op == "numeric":
        return _numeric(arg, value)
    if op in ("prefix", "suffix", "equals-ignore-case", "wildcard"):
        return _string_op(op, arg, value)
    raise PatternError(f"unsupported operator {op!r}")


def _match_leaf(alternatives: list[Any], value: Any) -> bool:
    if not alternatives:
        raise PatternError("a pattern leaf needs at least one value")
    if value is _MISSING:
        for alt in alternatives:  # validate, then only exists:false can match a missing field
            _match_alternative(alt, None)
        return any(isinstance(a, Mapping) and a.get("exists") is False for a in alternatives)
    if isinstance(value, Mapping):
        for alt in alternatives:
            _match_alternative(alt, None)
        return False  # leaves only: an object never matches a leaf (not even exists:true)
    candidates = value if isinstance(value, list) else [value]
    return any(
        _match_alternative(alt, candidate) for alt in alternatives for candidate in candidates
    )


def _match_object(pattern: Mapping[str, Any], record: Any) -> bool:
    if not isinstance(pattern, Mapping):
        raise PatternError(f"a pattern is an object, got {pattern!r}")
    if not isinstance(record, Mapping):
        record = {}
    ok = True
    for field, sub in pattern.items():
        if field == "$or":
            if not isinstance(sub, list) or len(sub) < 2:
                raise PatternError("'$or' needs a list of at least two patterns")
            result = any(_match_object(p, record) for p in sub)
        elif isinstance(sub, Mapping):
            value = record.get(field, _MISSING)
            if value is not _MISSING and not isinstance(value, Mapping):
                # validate the rest of the pattern, then fail: a scalar has no sub-fields
                _match_object(sub, {})
                result = False
            else:
                result = _match_object(sub, value if value is not _MISSING else {})
        elif isinstance(sub, list):
            result = _match_leaf(sub, record.get(field, _MISSING))
        else:
            raise PatternError(f"field {field!r}: a leaf must be a list of values, got {sub!r}")
        ok = ok and result  # keep going: every part of the pattern is validated
    return ok


def matches(pattern: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
    """True if `record` (one Lambda event record, e.g. one DynamoDB stream record) matches `pattern`."""
    return _match_object(pattern, record)


def matches_any(patterns: Iterable[Mapping[str, Any]], record: Mapping[str, Any]) -> bool:
    """True if any pattern matches: the entries of `FilterCriteria.Filters` are ORed."""
    results = [matches(p, record) for p in patterns]  # evaluate all so that every pattern is validated
    return any(results)


def parse_filter_criteria(criteria: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`{"Filters": [{"Pattern": "<json string>"}, ...]}` (API / CloudFormation shape) -> list of patterns."""
    out = []
    for f in criteria.get("Filters", []):
        pattern = f["Pattern"]
        out.append(json.loads(pattern) if isinstance(pattern, str) else dict(pattern))
    return out


def filter_records(
    patterns: Sequence[Mapping[str, Any]], records: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The records an event source mapping with these filters would deliver (all of them if no filters)."""
    if not patterns:
        return list(records)
    return [r for r in records if matches_any(patterns, r)]
