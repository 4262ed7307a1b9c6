"""S3 notifications through the event queue (issue 15): the splitter function, as lambda.yaml's event source mapping
invokes it, handles a batch of SQS messages, each one S3 event, on a few threads; an event that fails is reported
alone (`batchItemFailures`, partial batch response) while the others are done; the batch's "transfer complete"
notices go out as one summary. The real handler against moto's server; the batch built as Lambda builds it
(s3sync.local.events.sqs_batch)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from s3sync.contract import Env, Status
from s3sync.local import events
from s3sync.transfer import logs
from s3sync.transfer.notify import each_notice
from tests.ops_support import System, completion_inbox, make_system


@pytest.fixture
def splitter_env(moto_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[System, Callable[[], list]]]:
    """The splitter function's environment (as the stack sets it, with a completion topic delivering to a queue
    that the test reads), a fresh `runtime()`."""
    from functions import _common

    sys_ = make_system(moto_server.endpoint_url, dest_prefix="copy/")
    topic, notices = completion_inbox(moto_server.endpoint_url, sys_.src)
    env = {**sys_.target.env(), "AWS_ENDPOINT_URL": moto_server.endpoint_url, Env.COMPLETION_TOPIC_ARN: topic}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    _common.runtime.cache_clear()

    yield sys_, notices
    _common.runtime.cache_clear()
    logs.setup("INFO")  # runtime() bound the JSON logs to this test's captured stderr


def batch(sys_: System, bodies: dict[str, Any]) -> dict[str, Any]:
    """The mapping's event for messages id -> body (an S3 event, or a raw string)."""
    messages = [{"MessageId": mid, "ReceiptHandle": f"rh-{mid}", "MD5OfBody": "",
                 "Body": body if isinstance(body, str) else json.dumps(body),
                 "Attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1700000000000"}}
                for mid, body in bodies.items()]
    return events.sqs_batch(messages, "arn:aws:sqs:us-east-1:123456789012:events", region="us-east-1")


def created(sys_: System, key: str) -> dict[str, Any]:
    head = sys_.s3.head_object(Bucket=sys_.src, Key=key)
    return events.s3_object_created(sys_.src, key, head["ContentLength"], head["ETag"], region="us-east-1")


def test_a_batch_is_handled_at_once_and_notified_in_one_summary(splitter_env):
    from functions.splitter import handler

    sys_, notices = splitter_env
    data = {f"small/{i}.txt": f"object {i}".encode() for i in range(3)}
    for key, body in data.items():
        sys_.s3.put_object(Bucket=sys_.src, Key=key, Body=body)
    bodies: dict[str, Any] = {f"m{i}": created(sys_, key) for i, key in enumerate(data)}
    bodies["test"] = events.s3_test_event(sys_.src)  # S3 sends it when the notification is set: acknowledged
    bodies["junk"] = "not json"  # nothing makes it readable: logged, acknowledged, never retried
    out = handler(batch(sys_, bodies))
    assert out["batchItemFailures"] == []
    assert sorted(j["outcome"] for j in out["jobs"]) == ["copied"] * 3
    assert "unreadable event message" in out["refused"][0]["reason"]
    for key, body in data.items():
        assert sys_.s3.get_object(Bucket=sys_.dst, Key="copy/" + key)["Body"].read() == body
    [summary] = notices()  # one message for the batch
    assert (summary["status"], summary["count"]) == (Status.DONE, 3)
    assert sorted(n["source"] for n in each_notice(summary)) == sorted(f"s3://{sys_.src}/{k}" for k in data)


def test_a_failed_event_comes_back_alone_and_the_others_are_done(splitter_env):
    """The source answers one HEAD with a connection error: that message is named in batchItemFailures (it comes
    back after the visibility timeout); the other two are copied and DONE. Delivered again, it is copied, and the
    two that were done are only written again (their jobs exist: one DONE job each, one notice each in all)."""
    from functions._common import runtime
    from functions.splitter import handler

    sys_, notices = splitter_env
    for key in ("ok-1.txt", "flaky.txt", "ok-2.txt"):
        sys_.s3.put_object(Bucket=sys_.src, Key=key, Body=key.encode())
    event = batch(sys_, {"m-ok-1": created(sys_, "ok-1.txt"), "m-flaky": created(sys_, "flaky.txt"),
                         "m-ok-2": created(sys_, "ok-2.txt")})
    failing = {"on": True}

    def refuse(params: dict[str, Any], **_: Any) -> None:
        if failing["on"] and params.get("Key") == "flaky.txt":
            raise EndpointConnectionError(endpoint_url="http://source")

    runtime().source.meta.events.register("before-parameter-build.s3.HeadObject", refuse)
    out = handler(event)
    assert out["batchItemFailures"] == [{"itemIdentifier": "m-flaky"}]
    assert sorted(j["outcome"] for j in out["jobs"]) == ["copied", "copied"]
    jobs = {j.source_key: j for j in sys_.ledger.scan_jobs()}
    assert set(jobs) == {"ok-1.txt", "ok-2.txt"} and all(j.status == Status.DONE for j in jobs.values())

    failing["on"] = False  # the message comes back (here: the whole batch, as if every message were redelivered)
    again = handler(event)
    assert again["batchItemFailures"] == []
    assert sorted(j["outcome"] for j in again["jobs"]) == ["copied", "copied-again", "copied-again"]
    assert {j.source_key: j.status for j in sys_.ledger.scan_jobs()} == {
        "ok-1.txt": Status.DONE, "flaky.txt": Status.DONE, "ok-2.txt": Status.DONE}
    assert sys_.s3.get_object(Bucket=sys_.dst, Key="copy/flaky.txt")["Body"].read() == b"flaky.txt"
    sent = [n["source"] for message in notices() for n in each_notice(message)]
    assert sorted(sent) == sorted(f"s3://{sys_.src}/{k}" for k in ("ok-1.txt", "flaky.txt", "ok-2.txt"))


def test_every_log_line_of_an_invocation_carries_its_request_id(splitter_env):
    """Issue 17 (logs): the lines a handler logs, on its own thread and on the threads that handle the batch's
    messages, carry Lambda's request id as "requestId" (the name of Lambda's JSON log format), so a job's line
    leads to its invocation; lines logged outside an invocation carry none."""
    import io
    import logging
    from types import SimpleNamespace

    from functions._common import runtime
    from functions.splitter import handler

    sys_, _ = splitter_env
    runtime()  # the cold start sets the logs up; then they go to this buffer
    out = io.StringIO()
    logs.setup("INFO", stream=out)
    sys_.s3.put_object(Bucket=sys_.src, Key="rid/a.txt", Body=b"a")
    context = SimpleNamespace(aws_request_id="8f5d2c1e-0000-4000-8000-000000000001", function_name="splitter")
    result = handler(batch(sys_, {"m1": created(sys_, "rid/a.txt"), "junk": "not json"}), context)
    assert [j["outcome"] for j in result["jobs"]] == ["copied"]
    logging.getLogger("s3sync.test").info("after the invocation")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    during, after = lines[:-1], lines[-1]
    assert {line["msg"] for line in during} >= {"copied", "unreadable event message; dropped"}
    assert all(line.get("requestId") == context.aws_request_id for line in during), during
    assert after["msg"] == "after the invocation" and "requestId" not in after
