"""What an error means for a job, and which side it names (s3sync.transfer.errors.classify): operators act on the
text of a FAILED job's reason, so it must name the side that refused, never guess "destination"."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from s3sync.transfer.errors import CredentialsError, PermanentError, RetryableError, classify, side_of


def client_error(code: str, operation: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       operation)


@pytest.mark.parametrize("code, operation, side, kind, words", [
    ("AccessDeniedException", "TransactWriteItems", "ledger", PermanentError, "ledger (DynamoDB) refused access"),
    ("ResourceNotFoundException", "Query", "ledger", PermanentError, "table or index is missing"),
    ("ProvisionedThroughputExceededException", "UpdateItem", "ledger", RetryableError, "ledger error"),
    ("AWS.SimpleQueueService.NonExistentQueue", "SendMessageBatch", "queue", PermanentError, "does not exist"),
    ("AccessDenied", "GetObject", "source", PermanentError, "source refused access"),
    ("AccessDenied", "UploadPart", "destination", CredentialsError, "destination refused access"),
    ("SlowDown", "UploadPart", "destination", RetryableError, "destination error SlowDown"),
])
def test_each_side_names_itself(code, operation, side, kind, words):
    err = classify(client_error(code, operation), side_of(client_error(code, operation), side))
    assert type(err) is kind and words in err.reason and err.code == code


def test_a_dynamodb_refusal_met_by_completion_is_not_reported_as_the_destinations():
    """Completion meets S3 and DynamoDB errors alike; the operation tells which (issue 17)."""
    err = classify(client_error("AccessDeniedException", "Query"), side_of(client_error("x", "Query"), "destination"))
    assert "ledger (DynamoDB)" in err.reason and "destination" not in err.reason


def test_the_side_is_a_closed_set():
    with pytest.raises(ValueError, match="side must be one of"):
        classify(client_error("AccessDenied", "GetItem"), "table")
    assert "connection problem" in classify(ReadTimeoutError(endpoint_url="x"), "queue").reason
