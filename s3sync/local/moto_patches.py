"""Make the embedded moto server's cost per request constant, as it is in AWS (applied by `MotoServer.start()`).

moto (5.2) does some work on every request that grows with the size of the tables and queues it holds. On the
local runner's control plane that work dominates (docs/benchmarks.md: measured per call, moto in this process):

- DynamoDB TransactWriteItems deep-copies every table it touches, items *and* stream records, as its rollback
  before writing: `Ledger.record_part` cost ~18 ms with 100 parts recorded and ~240 ms with 1,000 (quadratic over
  a 10,000-part plan). Patched: every condition is checked first, on the current state, and the writes are made
  only when all hold, so a cancelled transaction writes nothing and needs no rollback (the error, reasons and
  `ALL_OLD` items are moto's own). The DynamoDB requests of `MotoServer` are serialized (`_serialized_dynamodb`),
  so nothing changes between the checks and the writes. A write that raises after its checks passed (only an
  invalid expression can) puts the items and stream records back and cancels the transaction with the reason
  moto gives for it.
  A side effect that matters: moto's rollback replaced the table objects, which left DynamoDB stream iterators
  reading a dead copy; without a rollback, iterators stay live.
- SQS SendMessage reads `queue.attributes` for one flag (ContentBasedDeduplication), and that property counts the
  visible, delayed and in-flight messages by scanning the whole queue three times; ReceiveMessage does the same
  for every message it returns (it reads MessageRetentionPeriod through get_queue_attributes): ~150 ms per
  SendMessageBatch into a queue of 1,000 messages. Patched: while a message is sent or received the three counts
  are not computed (neither operation uses them; GetQueueAttributes still counts).
- DynamoDB Query on a table's key sorts every item of the table (`Table.all_items()`) and then keeps those with
  the queried partition key: the completion's query of a job's parts grew with every part of every job recorded
  (bench B2, 1,000 objects). Patched: a key query starts from that partition's items only (same results, same
  order).
- DynamoDB Query on a global secondary index does the same over every item of the table, then keeps those holding
  the queried partition key value: the sweeper's and `s3sync status`'s queries of the sparse `Attention` index
  (a few unfinished jobs) cost as much as a Scan of every DONE job. Patched: each table keeps, per GSI, which items
  hold which partition key value, maintained on every write (put, update, delete, a transaction's undo; built from
  the items on the first query of the index), and a query starts from those items (same results, same order).
- DynamoDB Streams GetRecords answers through moto's generic, shape-driven serializer, ~5 ms per record of a
  NEW_AND_OLD_IMAGES stream (the local runner reads every record of the transfers table). The records are already
  in the wire format: patched to answer them as JSON directly (timestamps as epoch seconds, as the serializer does).
- Every visibility and delay check computes "now" through datetime arithmetic: `unix_time_millis()` without an
  argument is computed from `time.time()` (the same value, ~15x cheaper).
- Strictness, not speed: UploadPart and CompleteMultipartUpload for an upload that does not exist (aborted, or
  already completed) raise a KeyError inside moto (an InternalError 500, which botocore retries); S3 answers
  NoSuchUpload (404: "The specified multipart upload does not exist. The upload ID might be invalid, or the multipart
  upload might have been aborted or completed", S3 API reference, UploadPart/CompleteMultipartUpload errors), which
  is what the engine must handle. Patched to answer NoSuchUpload.
- The request dispatcher lists moto's package directory (os.listdir and ~150 isdir calls) on every request under
  its lock: listed once.

Each patch checks that moto still has the shape it was written against and is skipped otherwise (moto then runs
as shipped: correct, slower). `tests/test_moto_patches.py` checks the semantics against the unpatched code paths.
"""

from __future__ import annotations

import copy
import datetime
import functools
import json
import threading
import time
from typing import Any

__all__ = ["apply", "applied"]

_lock = threading.Lock()
_applied: dict[str, bool] = {}


def applied() -> dict[str, bool]:
    """Which patches are in place in this process (name -> True), for logs and tests."""
    return dict(_applied)


def apply() -> dict[str, bool]:
    """Patch moto's classes in this process, once; returns which patches are in place."""
    with _lock:
        if _applied:
            return dict(_applied)
        for name, patch in (("transactions", _patch_transactions), ("key_query", _patch_key_query),
                            ("index_query", _patch_index_query),
                            ("stream_records", _patch_stream_records),
                            ("sqs_counts", _patch_sqs_counts),
                            ("sqs_clock", _patch_sqs_clock), ("dispatch", _patch_dispatch),
                            ("no_such_upload", _patch_no_such_upload)):
            try:
                _applied[name] = bool(patch())
            except (ImportError, AttributeError):
                _applied[name] = False
        return dict(_applied)


# --- DynamoDB ---------------------------------------------------------------------------------------------------------
def _patch_transactions() -> bool:
    import moto.dynamodb.models as models  # noqa: PLC0415
    from moto.dynamodb.exceptions import (  # noqa: PLC0415
        ConditionalCheckFailed,
        MultipleTransactionsException,
        TransactionCanceledException,
    )

    backend = models.DynamoDBBackend
    if not all(hasattr(backend, n) for n in ("transact_write_items", "get_item", "get_table", "get_keys_value",
                                               "put_item", "delete_item", "update_item")):
        return False
    get_filter_expression = models.get_filter_expression
    original = backend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        if len(transact_items) > 100 or any(len(item) != 1 for item in transact_items):
            return original(self, transact_items)  # moto's own validation errors
        ops: list[tuple[int, str, dict[str, Any], dict[str, Any], Any, Any]] = []
        errors: list[tuple[str | None, str | None, dict[str, Any] | None]] = []
        seen: set[tuple[str, str]] = set()
        try:
            for item in transact_items:  # phase 1: every check, on the current state; no writes
                op_type, op = next(iter(item.items()))
                if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                    return original(self, transact_items)
                table = self.get_table(op["TableName"])
                if op_type == "Put":
                    attrs = op["Item"]
                    key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                    if table.range_key_attr is not None:
                        key[table.range_key_attr] = attrs[table.range_key_attr]
                else:
                    key = op["Key"]
                ident = (str(op["TableName"]), str(dict(sorted(key.items()))))
                if ident in seen:
                    raise MultipleTransactionsException()
                seen.add(ident)
                current = self.get_item(op["TableName"], key)
                condition = op.get("ConditionExpression")
                if condition is not None and not get_filter_expression(
                        condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues"),
                ).expr(current):
                    old = (current.to_json()["Attributes"]
                           if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current else None)
                    errors.append(("ConditionalCheckFailed", ConditionalCheckFailed().message, old))
                    continue
                errors.append((None, None, None))
                if op_type != "ConditionCheck":
                    ops.append((len(errors) - 1, op_type, op, key, table, current))
        except MultipleTransactionsException:
            raise
        except Exception:  # noqa: BLE001 - anything unusual (missing table, bad key): moto's own code answers
            return original(self, transact_items)
        if any(code is not None for code, _, _ in errors):
            raise TransactionCanceledException(errors)  # nothing was written: nothing to roll back
        undo = _Undo(self)
        index = -1
        try:  # phase 2: the writes, as moto makes them
            for index, op_type, op, key, table, current in ops:  # noqa: B007 - `index` is read after a failure
                undo.remember(table, key, current)
                names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
                condition = op.get("ConditionExpression")
                if op_type == "Put":
                    self.put_item(op["TableName"], op["Item"], condition_expression=condition,
                                  expression_attribute_names=names, expression_attribute_values=values)
                elif op_type == "Delete":
                    self.delete_item(op["TableName"], key, condition_expression=condition,
                                     expression_attribute_names=names, expression_attribute_values=values)
                else:
                    self.update_item(op["TableName"], key, update_expression=op["UpdateExpression"],
                                     condition_expression=condition, expression_attribute_names=names,
                                     expression_attribute_values=values)
        except Exception as exc:  # noqa: BLE001 - put everything back and cancel, with moto's reason for it
            undo.restore()
            errors[index] = (type(exc).__name__, str(exc), None)
            raise TransactionCanceledException(errors) from None
        return None

    transact_write_items.__doc__ = "TransactWriteItems without whole-table copies (s3sync.local.moto_patches)"
    backend.transact_write_items = transact_write_items  # type: ignore[method-assign]  # patching moto, on purpose
    return True


class _Undo:
    """The items (and stream lengths) a transaction's writes touched, to put back if a write raises."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.items: list[tuple[Any, Any, Any, Any]] = []  # (table, hash key, range key, old item or None)
        self.streams: dict[int, tuple[Any, int]] = {}  # id(shard) -> (shard, length before)

    def remember(self, table: Any, key: dict[str, Any], current: Any) -> None:
        """Before the write to `key`: `current` is its item as the checks saw it (nothing has changed since)."""
        hash_key, range_key = self.backend.get_keys_value(table, key)
        self.items.append((table, hash_key, range_key, copy.deepcopy(current)))
        shard = getattr(table, "stream_shard", None)
        if shard is not None and id(shard) not in self.streams:
            self.streams[id(shard)] = (shard, len(shard.items))

    def restore(self) -> None:
        for table, hash_key, range_key, old in reversed(self.items):
            if range_key is not None:
                if old is None:
                    table.items.get(hash_key, {}).pop(range_key, None)
                else:
                    table.items.setdefault(hash_key, {})[range_key] = old
            elif old is None:
                table.items.pop(hash_key, None)
            else:
                table.items[hash_key] = old
        for shard, length in self.streams.values():
            del shard.items[length:]
        for table, hash_key, range_key, _old in self.items:
            _note_item(table, hash_key, range_key)


def _patch_key_query() -> bool:
    import inspect  # noqa: PLC0415

    from moto.dynamodb.models.table import Table  # noqa: PLC0415

    params = list(inspect.signature(Table.query).parameters)
    if params[:2] != ["self", "hash_key"] or "index_name" not in params or not callable(Table.all_items):
        return False
    index_position = params.index("index_name") - 1  # among the positional arguments after self
    original = Table.query

    @functools.wraps(original)  # its signature stays moto's (the index_query patch reads it)
    def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = kwargs.get("index_name", args[index_position - 1] if len(args) >= index_position else None)
        if index_name or hash_key is None or not self.range_key_attr or "all_items" in vars(self):
            return original(self, hash_key, *args, **kwargs)
        partition = self.items.get(hash_key) or {}
        ordered = sorted(partition.values(), key=lambda item: item.range_key)
        self.all_items = lambda: ordered  # what moto's query filters; requests are serialized (MotoServer)
        try:
            return original(self, hash_key, *args, **kwargs)
        finally:
            del self.all_items

    query.__doc__ = "Query on the table's key from its partition only (s3sync.local.moto_patches)"
    Table.query = query  # type: ignore[method-assign]  # patching moto, on purpose
    return True


_VIEW = "_s3sync_gsi_view"  # the attribute a table keeps its index views in (absent until an index is queried)


class _IndexView:
    """One GSI's partition key values -> the keys (hash, range) of the items holding them, and back."""

    def __init__(self, attr: str) -> None:
        self.attr = attr
        self.keys: dict[Any, set[tuple[Any, Any]]] = {}
        self.value_of: dict[tuple[Any, Any], Any] = {}

    def note(self, key: tuple[Any, Any], item: Any) -> None:
        value = item.attrs.get(self.attr) if item is not None else None
        old = self.value_of.get(key)
        if old is not None and (value is None or old != value):
            self.keys[old].discard(key)
            if not self.keys[old]:
                del self.keys[old]
            del self.value_of[key]
        if value is not None:
            self.keys.setdefault(value, set()).add(key)
            self.value_of[key] = value


def _index_views(table: Any) -> dict[str, _IndexView]:
    """The table's views, built from its items on first use."""
    views = vars(table).get(_VIEW)
    if views is None:
        views = {}
        for index in table.global_indexes or []:
            hashes = [k["AttributeName"] for k in index.schema if k["KeyType"] == "HASH"]
            if len(hashes) == 1:
                views[index.name] = _IndexView(hashes[0])
        for item in _every_item(table):
            for view in views.values():
                view.note((item.hash_key, item.range_key), item)
        setattr(table, _VIEW, views)
    return views


def _every_item(table: Any) -> list[Any]:
    if table.range_key_attr:
        return [item for partition in table.items.values() for item in partition.values()]
    return list(table.items.values())


def _note_item(table: Any, hash_key: Any, range_key: Any) -> None:
    """After a write to (hash_key, range_key): the item as it now is, in every view the table keeps."""
    views = vars(table).get(_VIEW)
    if not views:
        return
    if range_key is not None:
        item = table.items.get(hash_key, {}).get(range_key)
    else:
        item = table.items.get(hash_key)
    for view in views.values():
        view.note((hash_key, range_key), item)


def _patch_index_query() -> bool:
    import inspect  # noqa: PLC0415

    import moto.dynamodb.models as models  # noqa: PLC0415
    from moto.dynamodb.models.table import Table  # noqa: PLC0415

    backend = models.DynamoDBBackend
    params = list(inspect.signature(Table.query).parameters)
    if (params[:2] != ["self", "hash_key"] or "index_name" not in params or not callable(Table.all_items)
            or list(inspect.signature(Table.delete_item).parameters) != ["self", "hash_key", "range_key"]
            or not all(callable(getattr(c, n, None)) for c, n in ((Table, "put_item"), (backend, "update_item"),
                                                                   (backend, "get_table")))):
        return False
    index_position = params.index("index_name") - 1
    query, put_item, delete_item, update_item = Table.query, Table.put_item, Table.delete_item, backend.update_item

    @functools.wraps(query)
    def indexed_query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = kwargs.get("index_name", args[index_position - 1] if len(args) >= index_position else None)
        view = _index_views(self).get(index_name) if index_name and hash_key is not None else None
        if view is None or "all_items" in vars(self):
            return query(self, hash_key, *args, **kwargs)
        items = []
        for h, r in view.keys.get(hash_key, ()):
            item = self.items.get(h, {}).get(r) if r is not None else self.items.get(h)
            if item is not None:
                items.append(item)
        items.sort(key=lambda x: (x.hash_key, x.range_key) if x.range_key else x.hash_key)  # as all_items() does
        self.all_items = lambda: items  # what moto's query filters; requests are serialized (MotoServer)
        try:
            return query(self, hash_key, *args, **kwargs)
        finally:
            del self.all_items

    def noted_put(self: Any, *args: Any, **kwargs: Any) -> Any:
        item = put_item(self, *args, **kwargs)
        _note_item(self, item.hash_key, item.range_key)
        return item

    def noted_delete(self: Any, hash_key: Any, range_key: Any) -> Any:
        item = delete_item(self, hash_key, range_key)
        _note_item(self, hash_key, range_key)
        return item

    def noted_update(self: Any, table_name: str, *args: Any, **kwargs: Any) -> Any:
        item = update_item(self, table_name, *args, **kwargs)
        _note_item(self.get_table(table_name), item.hash_key, item.range_key)
        return item

    indexed_query.__doc__ = "Query on a GSI from the items holding its key (s3sync.local.moto_patches)"
    # patching moto, on purpose
    Table.query = indexed_query  # type: ignore[method-assign]
    Table.put_item = noted_put  # type: ignore[method-assign]
    Table.delete_item = noted_delete  # type: ignore[method-assign]
    backend.update_item = noted_update  # type: ignore[method-assign]
    return True


def _patch_stream_records() -> bool:
    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler  # noqa: PLC0415

    if not callable(getattr(DynamoDBStreamsHandler, "get_records", None)):
        return False

    def get_records(self: Any) -> str:
        limit = self._get_param("Limit")
        result = self.backend.get_records(self._get_param("ShardIterator"), 1000 if limit is None else limit)
        return json.dumps(result, default=_epoch_seconds)

    get_records.__doc__ = "GetRecords answered as JSON directly (s3sync.local.moto_patches)"
    # patching moto, on purpose; moto's dispatcher answers a str as it is (the original returns an ActionResult)
    DynamoDBStreamsHandler.get_records = get_records  # type: ignore[method-assign, assignment]
    return True


def _epoch_seconds(value: Any) -> float:
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:  # moto's utcnow(): naive UTC
            value = value.replace(tzinfo=datetime.timezone.utc)
        return value.timestamp()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# --- SQS --------------------------------------------------------------------------------------------------------------
_in_message_call = threading.local()


def _patch_sqs_counts() -> bool:
    import moto.sqs.models as models  # noqa: PLC0415

    backend, queue = models.SQSBackend, models.Queue
    counts = ("approximate_number_of_messages", "approximate_number_of_messages_delayed",
              "approximate_number_of_messages_not_visible")
    if not all(isinstance(getattr(queue, n, None), property) for n in counts):
        return False
    if not all(callable(getattr(backend, n, None)) for n in ("send_message", "receive_message")):
        return False

    def without_counts(original: Any) -> Any:
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            _in_message_call.on = True
            try:
                return original(self, *args, **kwargs)
            finally:
                _in_message_call.on = False

        method.__doc__ = original.__doc__
        method.__wrapped__ = original  # type: ignore[attr-defined]
        return method

    # patching moto, on purpose
    backend.send_message = without_counts(backend.send_message)  # type: ignore[method-assign]
    backend.receive_message = without_counts(backend.receive_message)  # type: ignore[method-assign]
    for name in counts:
        prop = getattr(queue, name)

        def fget(self: Any, _real: Any = prop.fget) -> int:
            return 0 if getattr(_in_message_call, "on", False) else _real(self)

        setattr(queue, name, property(fget))
    return True


def _patch_sqs_clock() -> bool:
    import moto.sqs.models as models  # noqa: PLC0415

    real = models.unix_time_millis

    def unix_time_millis(dt: Any = None) -> float:
        return time.time() * 1000.0 if dt is None else real(dt)

    models.unix_time_millis = unix_time_millis
    return True


# --- S3 ---------------------------------------------------------------------------------------------------------------
def _patch_no_such_upload() -> bool:
    import moto.s3.models as models  # noqa: PLC0415
    from moto.s3.exceptions import NoSuchUpload  # noqa: PLC0415

    backend = models.S3Backend
    if not all(callable(getattr(backend, n, None)) for n in ("upload_part", "complete_multipart_upload", "get_bucket")):
        return False

    def checked(real: Any) -> Any:
        def method(self: Any, bucket_name: str, multipart_id: str, *args: Any, **kwargs: Any) -> Any:
            if multipart_id not in self.get_bucket(bucket_name).multiparts:
                raise NoSuchUpload(upload_id=multipart_id)
            return real(self, bucket_name, multipart_id, *args, **kwargs)
        method.__wrapped__ = real  # type: ignore[attr-defined]
        return method

    # patching moto, on purpose
    backend.upload_part = checked(backend.upload_part)  # type: ignore[method-assign]
    backend.complete_multipart_upload = checked(backend.complete_multipart_upload)  # type: ignore[method-assign]
    return True


# --- the request dispatcher -------------------------------------------------------------------------------------------
def _patch_dispatch() -> bool:
    from moto import backends  # noqa: PLC0415

    if not callable(getattr(backends, "list_of_moto_modules", None)):
        return False
    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: iter(modules)
    return True
