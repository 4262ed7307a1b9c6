"""One small error hierarchy for the transfer path: retryable vs permanent.

API retries (throttling, 5xx, connection resets) belong to botocore's retry config; what reaches this module has
already outlived them. `classify` is the one place that decides what an exception means for a job.
"""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from urllib3.exceptions import HTTPError as Urllib3HTTPError
from urllib3.exceptions import ProtocolError


class TransferError(Exception):
    """Base class: something went wrong moving one part or one object."""

    retryable = True

    def __init__(self, reason: str, code: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code  # the S3 error code behind it, if any


class RetryableError(TransferError):
    """Try again later (the message goes back to the queue): throttling, a broken stream, a short read."""

    retryable = True


class PermanentError(TransferError):
    """The job cannot finish: it is marked FAILED with this reason and its upload is aborted."""

    retryable = False


class CredentialsError(PermanentError):
    """The destination refused our credentials: re-read the secret once (they may have rotated), else fail."""


class MalformedMessage(PermanentError):
    """A queue message that does not follow the schema; it is never acted on and ends in the dead-letter queue."""


class PlanError(PermanentError):
    """An object that S3's multipart rules cannot carry (larger than 5 TiB)."""


# S3 error codes that no retry can fix, with the words a user reads in the job's `error` attribute.
_SOURCE_PERMANENT = {
    "PreconditionFailed": "source changed: its ETag no longer matches the planned one",
    "NoSuchKey": "source object missing",
    "NoSuchVersion": "source object version missing",
    "404": "source object missing",
    "NoSuchBucket": "source bucket missing",
    "AccessDenied": "source refused access",
    "403": "source refused access",
    "InvalidRange": "source object shorter than planned (changed?)",
    "412": "source changed: its ETag no longer matches the planned one",
    "InvalidObjectState": "source object is archived (restore it first)",
}
_DEST_PERMANENT = {
    "NoSuchUpload": "destination multipart upload no longer exists",
    "NoSuchBucket": "destination bucket missing",
    "AccessDenied": "destination refused access",
    "403": "destination refused access",
    "InvalidAccessKeyId": "destination refused the access key id",
    "SignatureDoesNotMatch": "destination refused the secret access key",
    "InvalidPart": "destination rejected a part",
    "InvalidPartOrder": "destination rejected the part order",
    "EntityTooSmall": "destination rejected a part smaller than 5 MiB",
    "EntityTooLarge": "destination rejected an oversized part",
    "InvalidDigest": "destination rejected the Content-MD5",
    # SSE-KMS at the destination (Env.DEST_SSE=aws:kms): the key is the China account's to fix
    "KMS.NotFoundException": "destination KMS key not found (S3SYNC_DEST_SSE_KMS_KEY_ID / DestSseKmsKeyId)",
    "KMS.DisabledException": "destination KMS key is disabled",
    "KMS.KMSInvalidStateException": "destination KMS key is not usable (pending deletion or import?)",
}


# Not permanent: BadDigest (the destination computed another MD5 than the one we computed from the bytes we sent)
# means the bytes changed on the way; the part is read and sent again, and a part that never arrives intact ends in
# the dead-letter queue after maxReceiveCount tries, its job then failed by the sweeper.


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "")) or str(
            exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
        )
    return ""


# The control plane's own services: what an operator reads names the service, never "destination".
_LEDGER_PERMANENT = {
    "AccessDeniedException": "the ledger (DynamoDB) refused access: the role lacks a right on the table",
    "ResourceNotFoundException": "the ledger (DynamoDB) table or index is missing",
    "ValidationException": "the ledger (DynamoDB) refused the request as malformed",
}
_QUEUE_PERMANENT = {
    "AccessDenied": "the part queue (SQS) refused access: the role lacks a right on the queue",
    "AWS.SimpleQueueService.NonExistentQueue": "the part queue (SQS) does not exist",
    "QueueDoesNotExist": "the part queue (SQS) does not exist",
}
_PERMANENT = {"source": _SOURCE_PERMANENT, "destination": _DEST_PERMANENT, "ledger": _LEDGER_PERMANENT,
              "queue": _QUEUE_PERMANENT}
SIDES = tuple(_PERMANENT)  # a closed set: an unknown side is a programming error, never "the destination"

_CREDENTIAL_CODES = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
_LEDGER_OPERATIONS = {"GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan", "TransactWriteItems",
                      "BatchWriteItem", "BatchGetItem", "DescribeTable"}
_QUEUE_OPERATIONS = {"SendMessage", "SendMessageBatch", "ReceiveMessage", "DeleteMessage", "DeleteMessageBatch",
                     "ChangeMessageVisibility", "ChangeMessageVisibilityBatch", "GetQueueAttributes"}


def side_of(exc: BaseException, default: str) -> str:
    """The side an error came from when the caller may meet several: DynamoDB and SQS operations name theirs."""
    operation = getattr(exc, "operation_name", "")
    if operation in _LEDGER_OPERATIONS:
        return "ledger"
    if operation in _QUEUE_OPERATIONS:
        return "queue"
    return default


def classify(exc: BaseException, side: str, where: str = "") -> TransferError:
    """Turn an exception from one side ("source", "destination" S3; "ledger" DynamoDB; "queue" SQS) into a
    TransferError.

    `where` (e.g. "s3://bucket/key at https://endpoint") is added to the reason so that a user reading a FAILED
    job knows which side and which object refused; it never carries a credential.
    """
    if side not in _PERMANENT:
        raise ValueError(f"classify: side must be one of {SIDES}, not {side!r}")
    if isinstance(exc, TransferError):
        return exc
    at = f" [{where}]" if where else ""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        table = _PERMANENT[side]
        if side == "destination" and code in _CREDENTIAL_CODES:
            return CredentialsError(f"{table[code]} ({code}){at}", code)
        if code in table:
            return PermanentError(f"{table[code]} ({code}){at}", code)
        return RetryableError(f"{side} error {code or 'unknown'}{at}: {exc}", code)
    if isinstance(
        exc,
        (BotoConnectionError, ReadTimeoutError, IncompleteReadError, ResponseStreamingError, ProtocolError,
         Urllib3HTTPError, ConnectionError, TimeoutError),
    ):
        return RetryableError(f"{side} connection problem: {type(exc).__name__}: {exc}")
    if isinstance(exc, BotoCoreError):
        return RetryableError(f"{side} client error: {type(exc).__name__}: {exc}")
    return RetryableError(f"{side} unexpected {type(exc).__name__}: {exc}")
