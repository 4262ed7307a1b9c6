"""What a run's control-plane requests would cost in AWS: the requests the local control plane served (moto, counted
by bench.common.MotoCalls) and the function invocations the runner made, priced at us-east-1 list prices.

Prices (us-east-1, on-demand, USD, free tiers left out), as AWS's pricing pages gave them in 2025 (not checked live:
there is no network here):
- SQS standard queue: $0.40 per million requests (each 64 KiB chunk of a request is one request; ours are smaller).
- DynamoDB on-demand (since the November 2024 reduction): $0.625 per million write request units, $0.125 per million
  read request units. A write of an item up to 1 KB is 1 WRU, a transactional one 2 per item; an eventually
  consistent read up to 4 KB is 0.5 RRU, a strongly consistent one 1, a transactional one 2 per item. Our job and
  part items are under 1 KB; every read is priced as strongly consistent and a TransactWriteItems as two items (the
  worker's: a part item and the job), which over-counts a little.
- DynamoDB Streams: free when read by a Lambda trigger (the completion function's mapping); not counted.
- Lambda: $0.20 per million invocations (the duration, GB-seconds, is compute, like the workers' ECS tasks, and is
  left out as theirs is).
- SNS: $0.50 per million Publish requests; each e-mail delivered costs $2.00 per 100,000 more (per subscriber):
  printed apart, since it depends on who subscribed.
The event queue's requests are priced: in AWS S3 sends each notification as one SendMessage (billed to the queue's
owner; the runner's lister stands in for it one for one) and the event source mapping receives and deletes them
in batches. Requests of the local stand-ins that have no request of ours in AWS are listed but not priced: the
runner's queue that receives the completion topic's notices (in AWS: e-mail), CloudWatch alarm evaluation (the
runner's GetQueueAttributes on the part queue is priced, though an alarm's metrics are not requests), ECS
DescribeServices, stream reads.
"""

from __future__ import annotations

from typing import Any

PER_MILLION = {
    "sqs": 0.40,
    "wru": 0.625,
    "rru": 0.125,
    "lambda": 0.20,
    "sns_publish": 0.50,
    "sns_email": 20.0,  # $2.00 per 100,000 deliveries
}
WRITES = {"PutItem": 1, "UpdateItem": 1, "DeleteItem": 1, "TransactWriteItems": 4}  # WRU per request
READS = {"GetItem": 1, "TransactGetItems": 2}  # RRU per request (strongly consistent, item <= 4 KB)


def priced_requests(control_plane: dict[str, Any]) -> dict[str, Any]:
    """The billable requests of a run by kind, and their cost in USD (see the module's docstring)."""
    sqs = wru = rru = publish = 0.0
    unpriced: dict[str, int] = {}
    billable = 0
    for name, n in (control_plane.get("calls") or {}).items():
        service, _, action = name.partition(".")
        service = {"dynamo": "dynamodb"}.get(service.lower(), service.lower())  # moto's DynamoHandler
        action, _, queue = action.partition("@")
        if service == "sqs" and queue in ("queue", "s3-events", ""):
            sqs += n
        elif service == "dynamodb" and action in WRITES:
            wru += WRITES[action] * n
        elif service == "dynamodb" and action in READS:
            rru += READS[action] * n
        elif service == "dynamodb" and action in ("Query", "BatchGetItem", "BatchWriteItem", "Scan"):
            rru += n  # at least one unit each; our queries read a page of small items
        elif service == "sns" and action == "Publish":
            publish += n
        else:
            unpriced[name] = n
            continue
        billable += n
    invocations = sum((control_plane.get("invocations") or {}).values())
    cost = (sqs * PER_MILLION["sqs"] + wru * PER_MILLION["wru"] + rru * PER_MILLION["rru"]
            + invocations * PER_MILLION["lambda"] + publish * PER_MILLION["sns_publish"]) / 1e6
    return {"requests": billable + invocations, "sqs": int(sqs), "dynamodb_wru": wru, "dynamodb_rru": rru,
            "lambda_invocations": invocations, "sns_publish": int(publish), "usd": cost,
            "usd_email_per_subscriber": publish * PER_MILLION["sns_email"] / 1e6, "unpriced": unpriced}


def per_million_objects(priced: dict[str, Any], objects: int) -> dict[str, float]:
    """Requests per object and USD per million objects."""
    if not objects:
        return {}
    return {"requests_per_object": round(priced["requests"] / objects, 2),
            "usd_per_million_objects": round(priced["usd"] / objects * 1e6, 2),
            "usd_email_per_million_objects": round(priced["usd_email_per_subscriber"] / objects * 1e6, 2)}
