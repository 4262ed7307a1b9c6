"""Small objects (issue 15): the splitter copies an object under the multipart threshold itself, at once, and
writes its job DONE in one conditional put: no part message, worker, stream record or completion. Against moto's
server (source, destination, ledger, topic) with the real Splitter."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from s3sync.contract import Status
from s3sync.transfer.checksums import strip_etag
from s3sync.transfer.events import ObjectRef
from s3sync.transfer.notify import Notifier
from s3sync.transfer.splitter import marker_of, source_metadata
from tests.conftest import make_client
from tests.ops_support import completion_inbox
from tests.test_exactly_once import World


def with_topic(w: World, endpoint_url: str) -> Callable[[], list[dict[str, Any]]]:
    """A completion topic delivering to a queue; returns a reader of the notices."""
    topic, read = completion_inbox(endpoint_url, w.src)
    w.splitter.notifier = Notifier(make_client("sns", endpoint_url), topic)
    return read


def test_a_small_object_is_copied_by_the_splitter_verified_and_done(moto_server):
    w = World(moto_server.endpoint_url)
    notices = with_topic(w, moto_server.endpoint_url)
    data = os.urandom(64 * 1024)
    w.s3.put_object(Bucket=w.src, Key="dir/small file.txt", Body=data, ContentType="text/plain",
                    Metadata={"origin": "test"})
    result = w.splitter.split(ObjectRef(w.src, "dir/small file.txt"))
    assert result.outcome == "copied"
    job = w.ledger.get_job(result.job_id)
    assert (job.status, job.total, job.remaining, job.done, job.done_bytes, job.inline) == (
        Status.DONE, 1, 0, 1, len(data), True)
    head = w.dest.head_object(Bucket=w.dst, Key="dir/small file.txt")
    assert w.dest_bytes("dir/small file.txt") == data and strip_etag(head["ETag"]) == job.dest_etag
    assert head["ContentType"] == "text/plain" and source_metadata(head["Metadata"]) == {"origin": "test"}
    assert marker_of(head["Metadata"]) == job.job_id
    assert w.messages() == []  # no part message: no worker, no stream record, no completion
    [notice] = notices()
    assert (notice["status"], notice["job"], notice["size"]) == (Status.DONE, job.job_id, len(data))


def test_a_repeated_event_copies_the_same_bytes_again_and_makes_no_second_job(moto_server):
    w = World(moto_server.endpoint_url)
    notices = with_topic(w, moto_server.endpoint_url)
    w.s3.put_object(Bucket=w.src, Key="a.txt", Body=b"hello")
    first = w.splitter.split(ObjectRef(w.src, "a.txt"))
    again = w.splitter.split(ObjectRef(w.src, "a.txt"))
    assert (first.outcome, again.outcome, again.job_id) == ("copied", "copied-again", first.job_id)
    assert [n["job"] for n in notices()] == [first.job_id]  # one notice
    assert w.ledger.get_job(first.job_id).attempt  # the first attempt's job, untouched


def test_a_late_event_for_an_old_version_leaves_the_newest_version_at_the_destination(moto_server):
    """v1 copied, v2 copied; v1's event delivered again (late, with its version id): the splitter writes v1's
    bytes again, finds v1's job DONE, sees the source holds v2 and re-attempts v2's job (its part message)."""
    w = World(moto_server.endpoint_url, versioned=True)
    v1 = w.s3.put_object(Bucket=w.src, Key="k.txt", Body=b"version one")["VersionId"]
    first = w.splitter.split(ObjectRef(w.src, "k.txt", v1))
    v2 = w.s3.put_object(Bucket=w.src, Key="k.txt", Body=b"version two")["VersionId"]
    second = w.splitter.split(ObjectRef(w.src, "k.txt", v2))
    assert (first.outcome, second.outcome) == ("copied", "copied")
    late = w.splitter.split(ObjectRef(w.src, "k.txt", v1))
    assert late.outcome == "copied-again" and w.dest_bytes("k.txt") == b"version one"  # for now
    [msg] = w.messages()  # v2's job again, through a worker
    assert msg.job_id == second.job_id and w.ledger.get_job(second.job_id).status == Status.COPYING
    w.copy(msg)
    assert w.dest_bytes("k.txt") == b"version two"


def test_a_small_object_deleted_between_head_and_get_is_a_failed_job(moto_server):
    """The splitter's HEAD saw it; it is gone before the GET: a FAILED job with the reason (completion's stream
    record then sends the notice), nothing written at the destination."""
    w = World(moto_server.endpoint_url)
    w.s3.put_object(Bucket=w.src, Key="gone.txt", Body=b"soon gone")
    w.s3.meta.events.register("before-parameter-build.s3.GetObject",
                              lambda params, **_: make_client("s3", moto_server.endpoint_url).delete_object(
                                  Bucket=w.src, Key="gone.txt"))
    result = w.splitter.split(ObjectRef(w.src, "gone.txt"))
    job = w.ledger.get_job(result.job_id)
    assert result.outcome == "failed" and job.status == Status.FAILED and "source object missing" in job.error
    assert "Contents" not in w.dest.list_objects_v2(Bucket=w.dst)


def test_inline_copies_can_be_switched_off(moto_server):
    """S3SYNC_INLINE_MAX_BYTES=0: every object goes through a part message and a worker, as before."""
    import dataclasses

    w = World(moto_server.endpoint_url)
    w.splitter.settings = dataclasses.replace(w.settings, inline_max_bytes=0)
    w.s3.put_object(Bucket=w.src, Key="b.txt", Body=b"by a worker")
    result = w.splitter.split(ObjectRef(w.src, "b.txt"))
    assert result.outcome == "planned" and w.ledger.get_job(result.job_id).status == Status.COPYING
    [msg] = w.messages()
    assert msg.whole and msg.job_id == result.job_id
