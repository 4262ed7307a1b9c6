"""Proposed fixes for three costs of moto's server (5.2) that grow with the queue and table sizes: a prototype for
`s3sync.local.servers.MotoServer`, applied by the benchmarks only with `--moto-speedups`.

Measured on the benchmark machine (client + server CPU per call, moto in this process):
- DynamoDB TransactWriteItems deep-copies every table it touches (items *and* stream records) before writing, as
  its rollback: `Ledger.record_part` costs ~18 ms with 100 parts recorded and ~240 ms with 1,000 (one 1 GiB object
  in 8 MiB parts: 128 parts; a 10,000-part object: quadratic).
  Fix: check every condition first, on the current state (the items of a transaction are distinct, and
  MotoServer serializes DynamoDB requests, so nothing changes in between); if one fails, run moto's own code
  (same error, same rollback); if all hold, make the same writes without the table copies, keeping copies of just
  the target items to put back if a write raises (only an invalid expression can: the ledger's never do; the
  stream records of such a partial write are not taken back, unlike moto's whole-table restore).
- SQS SendMessage reads `queue.attributes` for one flag (ContentBasedDeduplication), and that property counts the
  visible, delayed and in-flight messages by scanning the whole queue three times: ~150 ms per SendMessageBatch
  of 10 into a queue of 0-1,000 messages, quadratic over a 10,000-part plan (B3). ReceiveMessage does the same
  three times per message it returns (it reads MessageRetentionPeriod through get_queue_attributes): ~350 ms per
  receive of 4 from a queue of 6,000.
  Fix: while a message is being sent or received, the three counts are not computed (nothing there uses them).
- moto's request dispatcher lists its own package directory (os.listdir + ~150 isdir) on every request, under
  its lock: listed once.
- Every visibility/delay check (each message, on every receive and attribute count) computes "now" with
  datetime arithmetic: `unix_time_millis()` without an argument is replaced by the same value from
  `time.time()` (~15x cheaper).
"""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

_applied = False
_lock = threading.Lock()


def apply() -> bool:
    """Patch moto's classes in this process (idempotent); False if moto's code is not the expected shape."""
    global _applied
    with _lock:
        if _applied:
            return True
        try:
            import moto.dynamodb.models as ddb_models  # noqa: PLC0415
            import moto.sqs.models as sqs_models  # noqa: PLC0415
            from moto.dynamodb.exceptions import TransactionCanceledException  # noqa: PLC0415
        except ImportError:
            return False
        backend = ddb_models.DynamoDBBackend
        queue_cls = sqs_models.Queue
        if not all(hasattr(x, n) for x, n in ((backend, "transact_write_items"), (backend, "get_keys_value"),
                                               (ddb_models, "get_filter_expression"),
                                               (sqs_models, "unix_time_millis"), (queue_cls, "attributes"))):
            return False
        _patch_transactions(backend, ddb_models, TransactionCanceledException)
        _patch_send(sqs_models.SQSBackend, queue_cls)
        _patch_clock(sqs_models)
        _patch_dispatch()
        _applied = True
        return True


# --- DynamoDB ---------------------------------------------------------------------------------------------------------
def _patch_transactions(backend: Any, models: Any, cancelled: Any) -> None:
    get_filter_expression = models.get_filter_expression
    original = backend.transact_write_items

    def _target(self: Any, op_type: str, op: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        table = self.get_table(op["TableName"])
        if op_type == "Put":
            attrs = op["Item"]
            key = {table.hash_key_attr: attrs[table.hash_key_attr]}
            if table.range_key_attr is not None:
                key[table.range_key_attr] = attrs[table.range_key_attr]
        else:
            key = op["Key"]
        return table, key

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        if len(transact_items) > 100:
            return original(self, transact_items)
        ops: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        snapshots: list[tuple[Any, Any, Any, Any]] = []  # (table, hash key, range key, item copy or None)
        seen: set[tuple[str, str]] = set()
        try:
            for item in transact_items:  # phase 1: every condition, against the current state; no writes
                if len(item) != 1:
                    return original(self, transact_items)
                op_type, op = next(iter(item.items()))
                if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                    return original(self, transact_items)
                table, key = _target(self, op_type, op)
                ident = (str(op["TableName"]), str(dict(sorted(key.items()))))
                if ident in seen:
                    return original(self, transact_items)  # moto raises its own error for it
                seen.add(ident)
                current = self.get_item(op["TableName"], key)
                condition = op.get("ConditionExpression")
                if condition is not None:
                    check = get_filter_expression(condition, op.get("ExpressionAttributeNames"),
                                                  op.get("ExpressionAttributeValues"))
                    if not check.expr(current):
                        return original(self, transact_items)  # cancelled: moto builds the reasons
                if op_type != "ConditionCheck":
                    hash_key, range_key = self.get_keys_value(table, key)
                    snapshots.append((table, hash_key, range_key, copy.deepcopy(current)))
                ops.append((op_type, op, key))
        except cancelled:
            raise
        except Exception:  # noqa: BLE001 - anything unusual: moto's own code decides
            return original(self, transact_items)
        try:  # phase 2: the writes, as moto makes them, without copying whole tables first
            for op_type, op, key in ops:
                names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
                condition = op.get("ConditionExpression")
                if op_type == "Put":
                    self.put_item(op["TableName"], op["Item"], condition_expression=condition,
                                  expression_attribute_names=names, expression_attribute_values=values)
                elif op_type == "Delete":
                    self.delete_item(op["TableName"], key, condition_expression=condition,
                                     expression_attribute_names=names, expression_attribute_values=values)
                elif op_type == "Update":
                    self.update_item(op["TableName"], key, update_expression=op["UpdateExpression"],
                                     condition_expression=condition, expression_attribute_names=names,
                                     expression_attribute_values=values)
        except Exception:  # noqa: BLE001 - put the items back; moto's own path then raises its error
            _restore(snapshots)
            return original(self, transact_items)
        return None

    transact_write_items.__doc__ = "moto's TransactWriteItems without whole-table copies (bench/moto_speedups.py)"
    backend.transact_write_items = transact_write_items


def _restore(snapshots: list[tuple[Any, Any, Any, Any]]) -> None:
    for table, hash_key, range_key, old in reversed(snapshots):
        if range_key is not None:
            if old is None:
                table.items.get(hash_key, {}).pop(range_key, None)
            else:
                table.items[hash_key][range_key] = old
        elif old is None:
            table.items.pop(hash_key, None)
        else:
            table.items[hash_key] = old


# --- SQS --------------------------------------------------------------------------------------------------------------
_sending = threading.local()


def _patch_send(backend: Any, queue_cls: Any) -> None:
    """SendMessage reads one flag from `queue.attributes`; ReceiveMessage reads MessageRetentionPeriod through
    get_queue_attributes once per message returned: neither uses the three counts that property computes."""

    def without_counts(original: Any) -> Any:
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            _sending.on = True
            try:
                return original(self, *args, **kwargs)
            finally:
                _sending.on = False

        method.__doc__ = original.__doc__
        return method

    backend.send_message = without_counts(backend.send_message)
    backend.receive_message = without_counts(backend.receive_message)
    for name in ("approximate_number_of_messages", "approximate_number_of_messages_delayed",
                 "approximate_number_of_messages_not_visible"):
        prop = getattr(queue_cls, name)

        def fget(self: Any, _real: Any = prop.fget) -> int:
            return 0 if getattr(_sending, "on", False) else _real(self)

        setattr(queue_cls, name, property(fget))


def _patch_clock(sqs_models: Any) -> None:
    real = sqs_models.unix_time_millis

    def unix_time_millis(dt: Any = None) -> float:
        return time.time() * 1000.0 if dt is None else real(dt)

    sqs_models.unix_time_millis = unix_time_millis


# --- the request dispatcher -------------------------------------------------------------------------------------------
def _patch_dispatch() -> None:
    """Every request whose Host is 127.0.0.1 makes moto's dispatcher list its package directory (os.listdir and
    ~150 isdir calls), under the dispatcher's lock: list it once."""
    from moto import backends  # noqa: PLC0415

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules
