"""The part message round-trips and every malformed body is rejected with a reason."""

import json

import pytest

from s3sync.transfer.errors import MalformedMessage
from s3sync.transfer.message import PartMessage, decode


def sample(**kw):
    base = dict(job_id="j1", source_bucket="src", source_key="a b/ü+%.bin", source_etag='"abc"',
                dest_bucket="dst", dest_key="p/a b/ü+%.bin", part_number=2, total_parts=3, start=10, end=19,
                upload_id="u-1", attempt="a-1")
    base.update(kw)
    return PartMessage(**base)


def test_round_trip_keeps_every_field():
    m = sample(source_version="v1")
    assert decode(m.encode()) == m
    whole = sample(upload_id=None, part_number=1, total_parts=1, start=0, end=-1,
                   headers={"ContentType": "text/plain", "Metadata": {"k": "v"}})
    assert decode(whole.encode()) == whole and whole.size == 0


@pytest.mark.parametrize("body, reason", [
    ("not json", "not JSON"),
    ("[]", "not a JSON object"),
    ('{"v": 1}', "unknown message version 1"),  # a message of a worker before attempt tokens
    ('{"v": 2}', "missing message.src"),
])
def test_garbage_is_rejected_with_a_reason(body, reason):
    with pytest.raises(MalformedMessage, match=reason):
        decode(body)


def mutate(fn):
    data = json.loads(sample().encode())
    fn(data)
    return json.dumps(data)


@pytest.mark.parametrize("change, reason", [
    (lambda d: d["part"].update(n=0), "outside"),
    (lambda d: d["part"].update(n=4), "outside"),
    (lambda d: d["part"].update(n="2"), "wrong type"),
    (lambda d: d["part"].update(n=True), "wrong type"),
    (lambda d: d["part"].update(start=-1), "byte range"),
    (lambda d: d["part"].update(end=5), "byte range"),
    (lambda d: d["src"].update(key=""), "empty"),
    (lambda d: d["src"].pop("etag"), "missing src.etag"),
    (lambda d: d["dst"].update(upload=None), "exactly one part"),
    (lambda d: d["dst"].pop("attempt"), "missing dst.attempt"),
    (lambda d: d.update(headers=[1]), "headers"),
])
def test_invalid_fields_are_rejected(change, reason):
    with pytest.raises(MalformedMessage, match=reason):
        decode(mutate(change))
