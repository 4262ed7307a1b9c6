"""`python -m bench.client_cost`: the CPU a boto3 client spends per control-plane request, in this process alone.

Why it matters for B2: a small object costs the pipeline ~13 control-plane requests (see `python -m bench b2`,
"control-plane calls/object"), each paid for on the caller's side too (serializing, signing, parsing the answer),
whoever serves it. moto runs in its own process here (`moto_server`), so this process's CPU time is the client's
alone. Prints one line per request kind and the client CPU for one small object's requests at that rate.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3

from s3sync.local.servers import free_port

SMALL_OBJECT_REQUESTS = 13  # per small object, as `python -m bench b2` counts them


def _wait_up(url: str, deadline: float) -> None:
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not answer at {url}") from None
            time.sleep(0.1)


def measure(fn: Callable[[], Any], calls: int) -> tuple[float, float]:
    """(client CPU ms, wall ms) per call, after a warm-up."""
    for _ in range(20):
        fn()
    cpu, wall = time.process_time(), time.monotonic()
    for _ in range(calls):
        fn()
    return (time.process_time() - cpu) / calls * 1000, (time.monotonic() - wall) / calls * 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.client_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=300, help="requests per kind (default 300)")
    args = p.parse_args(argv)
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_up(url, time.monotonic() + 30)
        kw = {"endpoint_url": url, "region_name": "us-east-1", "aws_access_key_id": "bench",
              "aws_secret_access_key": "bench"}
        ddb, sqs = boto3.client("dynamodb", **kw), boto3.client("sqs", **kw)
        ddb.create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                         AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                         KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}])
        ddb.put_item(TableName="t", Item={"k": {"S": "a"}, "v": {"N": "1"}})
        queue = sqs.create_queue(QueueName="q")["QueueUrl"]
        kinds: dict[str, Callable[[], Any]] = {
            "DynamoDB GetItem": lambda: ddb.get_item(TableName="t", Key={"k": {"S": "a"}}, ConsistentRead=True),
            "DynamoDB UpdateItem": lambda: ddb.update_item(
                TableName="t", Key={"k": {"S": "a"}}, UpdateExpression="SET v = v + :one",
                ExpressionAttributeValues={":one": {"N": "1"}}),
            "SQS SendMessage": lambda: sqs.send_message(QueueUrl=queue, MessageBody="x" * 600),
        }
        per_call = []
        for name, fn in kinds.items():
            cpu, wall = measure(fn, args.calls)
            per_call.append(cpu)
            print(f"{name:22s} client CPU {cpu:5.2f} ms per request (wall {wall:5.2f} ms, server included)")
        mean = sum(per_call) / len(per_call)
        print(f"client CPU for one small object's {SMALL_OBJECT_REQUESTS} requests at that rate: "
              f"{mean * SMALL_OBJECT_REQUESTS:.0f} ms")
    finally:
        server.kill()
        server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
