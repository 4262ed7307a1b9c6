"""Lambda event filtering, checked against the contract's completion filters and AWS's documented rules."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from s3sync import contract
from s3sync.local import patterns
from s3sync.local.patterns import PatternError, matches, matches_any


@pytest.fixture
def modify_record(sample_event) -> dict[str, Any]:
    return sample_event("dynamodb-stream-modify")["Records"][0]


def with_images(record: dict[str, Any], new: dict[str, Any] | None = None, old: dict[str, Any] | None = None,
                drop_old: bool = False) -> dict[str, Any]:
    rec = copy.deepcopy(record)
    for key, value in (new or {}).items():
        rec["dynamodb"]["NewImage"][key] = value
    for key, value in (old or {}).items():
        rec["dynamodb"]["OldImage"][key] = value
    if drop_old:
        rec["dynamodb"].pop("OldImage")
    return rec


COMPLETE, FAILED = contract.COMPLETION_FILTERS


def test_sample_modify_to_remaining_zero_matches_the_completion_filter(modify_record):
    assert matches(COMPLETE, modify_record)
    assert not matches(FAILED, modify_record)
    assert matches_any(contract.COMPLETION_FILTERS, modify_record)


def test_shared_filter_samples_agree_with_the_contract(sample_event, modify_record):
    from_criteria = patterns.parse_filter_criteria(sample_event("dynamodb-filter-criteria"))
    assert from_criteria == [sample_event("dynamodb-filter-pattern")] == [COMPLETE]
    assert patterns.filter_records(from_criteria, [modify_record]) == [modify_record]


def test_remaining_one_does_not_match(modify_record):
    rec = with_images(modify_record, new={"remaining": {"N": "1"}}, old={"remaining": {"N": "2"}})
    assert not matches_any(contract.COMPLETION_FILTERS, rec)


def test_numbers_match_as_strings_only(modify_record):
    assert not matches({"dynamodb": {"NewImage": {"remaining": {"N": [0]}}}}, modify_record)
    assert not matches({"dynamodb": {"NewImage": {"remaining": {"N": [{"numeric": ["=", 0]}]}}}}, modify_record)
    assert matches({"dynamodb": {"NewImage": {"remaining": {"N": ["0"]}}}}, modify_record)


def test_transition_to_failed_matches_the_failed_filter(modify_record):
    rec = with_images(modify_record, new={"status": {"S": "FAILED"}, "remaining": {"N": "1"}},
                      old={"status": {"S": "COPYING"}})
    assert matches(FAILED, rec)
    assert not matches(COMPLETE, rec)
    assert matches_any(contract.COMPLETION_FILTERS, rec)


def test_already_failed_old_image_does_not_match_again(modify_record):
    rec = with_images(modify_record, new={"status": {"S": "FAILED"}, "reason": {"S": "later write"}},
                      old={"status": {"S": "FAILED"}})
    assert not matches_any(contract.COMPLETION_FILTERS, rec)


def test_insert_without_old_image_never_matches_anything_but(modify_record):
    """A field named in the pattern must exist: anything-but does not match a missing OldImage."""
    rec = with_images(modify_record, new={"status": {"S": "FAILED"}}, drop_old=True)
    rec["eventName"] = "INSERT"
    assert not matches(FAILED, rec)


def test_completing_and_done_do_not_rematch(modify_record):
    for status in ("COMPLETING", "DONE"):
        rec = with_images(modify_record, new={"status": {"S": status}}, old={"status": {"S": "COPYING"}})
        assert not matches_any(contract.COMPLETION_FILTERS, rec), status


def test_transition_pattern_from_sources_md(modify_record):
    pattern = {"dynamodb": {"NewImage": {"remaining": {"N": ["0"]}, "status": {"S": ["COPYING"]}},
                            "OldImage": {"remaining": {"N": [{"anything-but": ["0"]}]}}}}
    assert matches(pattern, modify_record)
    assert not matches(pattern, with_images(modify_record, old={"remaining": {"N": "0"}}))


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ({"eventName": ["MODIFY"]}, True),
        ({"eventName": ["INSERT", "MODIFY"]}, True),  # a list is OR
        ({"eventName": ["INSERT"]}, False),
        ({"eventName": [{"prefix": "MOD"}]}, True),
        ({"eventName": [{"suffix": "IFY"}]}, True),
        ({"eventName": [{"equals-ignore-case": "modify"}]}, True),
        ({"eventName": [{"wildcard": "M*Y"}]}, True),
        ({"eventName": [{"anything-but": "MODIFY"}]}, False),  # single value form
        ({"eventName": [{"anything-but": ["INSERT", "REMOVE"]}]}, True),
        ({"eventName": [{"anything-but": {"prefix": "MOD"}}]}, False),
        ({"eventName": [{"exists": True}]}, True),
        ({"eventName": [{"exists": False}]}, False),
        ({"nope": [{"exists": False}]}, True),
        ({"nope": [{"exists": True}]}, False),
        ({"nope": ["x"]}, False),  # missing field: no match
        ({"nope": [{"anything-but": ["x"]}]}, False),  # ... even for anything-but
        ({"nope": {"deeper": [{"exists": False}]}}, True),
        ({"dynamodb": [{"exists": True}]}, False),  # exists works on leaves only
        ({"dynamodb": {"SizeBytes": [{"numeric": [">", 100, "<=", 142]}]}}, True),
        ({"dynamodb": {"SizeBytes": [{"numeric": ["<", 100]}]}}, False),
        ({"dynamodb": {"SizeBytes": [142]}}, True),
        ({"dynamodb": {"SizeBytes": ["142"]}}, False),
        ({"eventName": {"nested": ["x"]}}, False),  # a scalar has no sub-fields
        ({"$or": [{"eventName": ["INSERT"]}, {"awsRegion": ["us-east-1"]}]}, True),
        ({"$or": [{"eventName": ["INSERT"]}, {"awsRegion": ["cn-north-1"]}]}, False),
    ],
)
def test_operators(modify_record, pattern, expected):
    assert matches(pattern, modify_record) is expected


def test_null_bool_and_list_values():
    rec = {"a": None, "b": True, "c": 1, "tags": ["x", "y"], "e": []}
    assert matches({"a": [None]}, rec)
    assert not matches({"a": ["null"]}, rec)
    assert matches({"a": [{"exists": True}]}, rec)
    assert matches({"b": [True]}, rec) and not matches({"b": [1]}, rec)
    assert not matches({"c": [True]}, rec) and matches({"c": [1.0]}, rec)
    assert matches({"tags": ["y"]}, rec) and not matches({"tags": ["z"]}, rec)
    assert not matches({"e": ["x"]}, rec)


@pytest.mark.parametrize(
    "pattern",
    [
        {"a": "x"},  # leaf must be a list
        {"a": []},
        {"a": [{"unknown-op": 1}]},
        {"a": [{"prefix": 1}]},
        {"a": [{"numeric": [">"]}]},
        {"a": [{"numeric": ["!=", 1]}]},
        {"a": [{"exists": "yes"}]},
        {"a": [{"prefix": "x", "suffix": "y"}]},
        {"$or": [{"a": ["x"]}]},
    ],
)
def test_malformed_patterns_are_rejected(pattern):
    with pytest.raises(PatternError):
        matches(pattern, {"a": "x"})
    with pytest.raises(PatternError):  # validated even when the field is missing
        matches(pattern, {})
