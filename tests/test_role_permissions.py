"""Every call a role's code can make is allowed by that role's policies, in every configuration of the stacks, and
nothing else is (issue 18 item 4: no grant broader than the code).

`CALLS` lists, per role, the AWS operations its code can reach (read from the code: the call site is named), as the
IAM action that authorizes it and the resource it acts on. The test renders both templates (the default rendering
and one without the operations additions), evaluates the template Conditions for every combination of the
parameters they read (PropagateDeletes, FinderSchedule, SourceKmsKeyArn, LaunchType, KeyName, SshCidr), and checks
that the policies attached to the role in that combination (its inline policy, and any AWS::IAM::Policy or
ManagedPolicy attached to it, conditional ones only where their Condition holds) allow each call.

Calls made with the destination's credentials (the China keys, `DestClient`) are not the role's and are not listed:
CreateMultipartUpload, UploadPart, PutObject, ListParts, CompleteMultipartUpload, AbortMultipartUpload, HeadObject
and DeleteObject at the destination, ListObjectsV2 of the destination bucket.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest

from s3sync.stacks import StackConfig, build_ecs, build_lambda

# Resource kinds: what a statement's Resource names (see `kind_of`).
SOURCE_OBJECTS = "source bucket objects"
SOURCE_BUCKET = "source bucket"
TRANSFERS = "transfers table"
TRANSFERS_INDEX = "transfers table's Attention index"
FINDER_CURSOR = "the finder's cursor (SSM parameter)"
TRANSFERS_STREAM = "transfers table stream"
PARTS = "parts table"
QUEUE = "part queue"
SPLITTER_DLQ = "splitter dead-letter queue"
EVENT_QUEUE = "event queue (S3 notifications)"
SECRET = "destination credentials secret"
TOPIC = "completion topic"
SERVICE = "worker service"
LOG_GROUP = "the function's log group"
SOURCE_KEY = "source KMS key (SourceKmsKeyArn)"
ANY = "*"


class Call(NamedTuple):
    role: str  # logical id of the role
    action: str  # the IAM action that authorizes the operation
    resource: str  # a resource kind above
    site: str  # where the code makes the call
    only_if: str = ""  # a parameter: the call is made only when it is set (non-empty)


CALLS: tuple[Call, ...] = (
    # --- splitter (functions/splitter.py, functions/finder.py) ------------------------------------------------------
    Call("SplitterRole", "s3:GetObject", SOURCE_OBJECTS,
         "transfer/splitter.py Splitter.split: source.head_object (HeadObject is authorized by s3:GetObject); "
         "transfer/deletes.py DeletePropagator: source.head_object; transfer/reattempt.py Reattempter._head"),
    Call("SplitterRole", "s3:GetObjectVersion", SOURCE_OBJECTS,
         "the same HEADs with VersionId (a versioned source object)"),
    Call("SplitterRole", "s3:ListBucket", SOURCE_BUCKET,
         "transfer/finder.py list_objects_v2 of the source bucket (functions/finder.py, reached through the "
         "splitter handler by any find event)"),
    Call("SplitterRole", "dynamodb:GetItem", TRANSFERS,
         "transfer/ledger.py Ledger.get_job: Splitter.split, transfer/intake.py recreated/recopy, Finder"),
    Call("SplitterRole", "dynamodb:PutItem", TRANSFERS, "Ledger.create_job (Splitter.split)"),
    Call("SplitterRole", "dynamodb:UpdateItem", TRANSFERS,
         "Ledger.mark_copying / mark_failed (Splitter.split), Ledger.update_job (Reattempter's claim: a new "
         "attempt token; the old attempt's part items count for nothing, so the parts table is never touched)"),
    Call("SplitterRole", "sns:Publish", TOPIC,
         "transfer/splitter.py Splitter._copy_inline -> transfer/notify.py Notifier.done (a small object it copied)"),
    Call("SplitterRole", "sqs:SendMessage", QUEUE,
         "Splitter._send_batch: send_message_batch (SendMessageBatch is authorized by sqs:SendMessage)"),
    Call("SplitterRole", "secretsmanager:GetSecretValue", SECRET, "transfer/runtime.py Runtime.dest: read_secret"),
    Call("SplitterRole", "sqs:SendMessage", SPLITTER_DLQ,
         "Lambda sends a failed asynchronous event to the function's dead-letter queue with its execution role"),
    # the event source mapping polls the event queue with the function's execution role ("Lambda needs the following
    # permissions to manage messages in your Amazon SQS queue ... sqs:ReceiveMessage, sqs:DeleteMessage,
    # sqs:GetQueueAttributes", Lambda developer guide, SQS execution role permissions); ChangeMessageVisibility
    # is not on that list and is not granted
    Call("SplitterRole", "sqs:ReceiveMessage", EVENT_QUEUE,
         "the event source mapping (lambda.yaml SplitterEventMapping)"),
    Call("SplitterRole", "sqs:DeleteMessage", EVENT_QUEUE, "idem: a batch's handled messages"),
    Call("SplitterRole", "sqs:GetQueueAttributes", EVENT_QUEUE, "idem"),
    Call("SplitterRole", "ssm:GetParameter", FINDER_CURSOR,
         "functions/finder.py -> transfer/finder.py FinderCursor.load (any find event)"),
    Call("SplitterRole", "ssm:PutParameter", FINDER_CURSOR, "FinderCursor.save, after a find run"),
    # --- completion (functions/completion.py) ----------------------------------------------------------------------
    Call("CompletionRole", "dynamodb:UpdateItem", TRANSFERS,
         "transfer/completion.py Completer: elect_completion, mark_done, release_completion, mark_failed"),
    Call("CompletionRole", "dynamodb:Query", PARTS, "Completer._checked_parts -> Ledger.parts"),
    Call("CompletionRole", "dynamodb:GetItem", TRANSFERS,
         "Completer._keep_newest: Ledger.get_job of the newer version's job; Reattempter: the claim read back"),
    Call("CompletionRole", "dynamodb:DeleteItem", PARTS,
         "Completer._send_again -> Ledger.uncount_part: TransactWriteItems Delete of a part taken back"),
    Call("CompletionRole", "sqs:SendMessage", QUEUE,
         "Completer._send_again, and a re-copy of a DONE job (Completer._keep_newest -> Reattempter): "
         "Splitter.enqueue -> send_message_batch"),
    Call("CompletionRole", "s3:GetObject", SOURCE_OBJECTS,
         "Completer._current_job_id: source.head_object; Reattempter._head; Splitter.enqueue of a small object"),
    Call("CompletionRole", "s3:GetObjectVersion", SOURCE_OBJECTS, "Reattempter._head with VersionId"),
    Call("CompletionRole", "s3:ListBucket", SOURCE_BUCKET, "so that HEAD of a deleted key answers 404, not 403"),
    Call("CompletionRole", "sns:Publish", TOPIC, "Completer._publish"),
    Call("CompletionRole", "secretsmanager:GetSecretValue", SECRET, "Runtime.dest: read_secret"),
    Call("CompletionRole", "dynamodb:DescribeStream", TRANSFERS_STREAM,
         "the stream event source mapping polls with the function's execution role"),
    Call("CompletionRole", "dynamodb:GetRecords", TRANSFERS_STREAM, "idem"),
    Call("CompletionRole", "dynamodb:GetShardIterator", TRANSFERS_STREAM, "idem"),
    Call("CompletionRole", "dynamodb:ListStreams", ANY, "idem (no resource type: iam.UNSCOPABLE)"),
    # --- scale_out (functions/scale_out.py) ------------------------------------------------------------------------
    Call("ScaleOutRole", "ecs:DescribeServices", SERVICE, "transfer/scaling.py on_alarms, report_tasks"),
    Call("ScaleOutRole", "ecs:UpdateService", SERVICE, "transfer/scaling.py: update_service desiredCount"),
    # --- scale_in (functions/scale_in.py: scaling, and the sweeper) -----------------------------------------------
    Call("ScaleInRole", "ecs:DescribeServices", SERVICE, "transfer/scaling.py on_alarms, report_tasks"),
    Call("ScaleInRole", "ecs:UpdateService", SERVICE, "transfer/scaling.py on_alarms, ensure_at_least"),
    Call("ScaleInRole", "dynamodb:Query", TRANSFERS_INDEX,
         "transfer/sweeper.py Sweeper.sweep -> Ledger.unfinished_jobs -> attention_ids (the sparse index)"),
    Call("ScaleInRole", "dynamodb:BatchGetItem", TRANSFERS,
         "Ledger.unfinished_jobs -> get_jobs: each candidate read again, strongly consistently"),
    Call("ScaleInRole", "dynamodb:UpdateItem", TRANSFERS,
         "Sweeper._drive: release_completion, touch, note_redrive, mark_failed, mark_copying"),
    Call("ScaleInRole", "dynamodb:Query", PARTS, "Sweeper._missing -> Ledger.parts"),
    Call("ScaleInRole", "sqs:SendMessage", QUEUE, "Sweeper -> Splitter.enqueue -> send_message_batch"),
    Call("ScaleInRole", "sqs:GetQueueAttributes", QUEUE,
         "transfer/runtime.py Runtime.queue_busy (Sweeper: parts are re-sent only while the queue is empty)"),
    Call("ScaleInRole", "s3:ListBucket", SOURCE_BUCKET, "so that the HEAD of a deleted key answers 404, not 403"),
    Call("ScaleInRole", "s3:GetObject", SOURCE_OBJECTS, "Splitter.enqueue: HEAD of a small object (its headers)"),
    Call("ScaleInRole", "s3:GetObjectVersion", SOURCE_OBJECTS, "the same HEAD with VersionId"),
    # --- every function: the Lambda runtime writes its logs with the execution role --------------------------------
    *(Call(role, action, LOG_GROUP, "the Lambda runtime: the function's log lines (LoggingConfig.LogGroup)")
      for role in ("SplitterRole", "CompletionRole", "ScaleOutRole", "ScaleInRole")
      for action in ("logs:CreateLogStream", "logs:PutLogEvents")),
    # --- the worker task (container/worker.py) ---------------------------------------------------------------------
    Call("TaskRole", "sqs:ReceiveMessage", QUEUE, "transfer/worker.py Worker: receive_message"),
    Call("TaskRole", "sqs:DeleteMessage", QUEUE, "Worker: delete_message_batch"),
    Call("TaskRole", "sqs:ChangeMessageVisibility", QUEUE,
         "Worker: change_message_visibility, change_message_visibility_batch (heartbeat, release on SIGTERM)"),
    Call("TaskRole", "sqs:GetQueueAttributes", QUEUE, "transfer/runtime.py Runtime.worker: VisibilityTimeout"),
    Call("TaskRole", "s3:GetObject", SOURCE_OBJECTS, "transfer/copier.py _read_into: ranged get_object"),
    Call("TaskRole", "s3:GetObjectVersion", SOURCE_OBJECTS, "the same GET with VersionId"),
    Call("TaskRole", "s3:ListBucket", SOURCE_BUCKET,
         "so that the ranged GET of a deleted object answers 404 (source missing), not 403 (refused)"),
    Call("TaskRole", "kms:Decrypt", SOURCE_KEY,
         "copier.py's ranged GET of an SSE-KMS source object: S3 decrypts with the caller's kms:Decrypt (through S3 "
         "only: kms:ViaService)", only_if="SourceKmsKeyArn"),
    Call("TaskRole", "dynamodb:GetItem", PARTS, "Ledger.part_recorded (before every copy)"),
    Call("TaskRole", "dynamodb:PutItem", PARTS,
         "Ledger.record_part: TransactWriteItems Put (a transaction is authorized per contained action)"),
    Call("TaskRole", "dynamodb:UpdateItem", TRANSFERS,
         "Ledger.record_part: TransactWriteItems Update; Ledger.mark_failed (Worker._fail)"),
    Call("TaskRole", "dynamodb:GetItem", TRANSFERS,
         "Worker._refused: Ledger.get_job before failing a job; Ledger.record_part: get_job when a server gives no "
         "reasons"),
    Call("TaskRole", "secretsmanager:GetSecretValue", SECRET,
         "transfer/credentials.py DestClient: the secret read again after the destination refused the keys"),
)  # fmt: skip

ROLE_TEMPLATE = {"SplitterRole": "lambda", "CompletionRole": "lambda", "ScaleOutRole": "lambda",
                 "ScaleInRole": "lambda", "TaskRole": "ecs"}  # fmt: skip

CONFIGS = {"default": StackConfig(), "no-operations": dataclasses.replace(StackConfig(), operations=False)}


def templates(config: StackConfig) -> dict[str, dict[str, Any]]:
    return {"ecs": json.loads(build_ecs(config).to_json()), "lambda": json.loads(build_lambda(config).to_json())}


def kind_of(resource: Any) -> str:
    """The resource kind a statement's Resource entry names."""
    if resource == "*":
        return ANY
    text = json.dumps(resource, sort_keys=True)
    if "SourceBucketName" in text:
        return SOURCE_OBJECTS if "/*" in text else SOURCE_BUCKET
    if "SourceKmsKeyArn" in text:
        return SOURCE_KEY
    if "/index/" in text and "TransfersTable" in text:
        return TRANSFERS_INDEX
    if "finder-cursor" in text:
        return FINDER_CURSOR
    for needle, kind in (("StreamArn", TRANSFERS_STREAM), ("TransfersTable", TRANSFERS), ("PartsTable", PARTS),
                         ("SplitterDeadLetterQueue", SPLITTER_DLQ), ("TransferQueue", QUEUE),
                         ("EventQueue", EVENT_QUEUE),
                         ("DestCredentials", SECRET), ("CompletionTopic", TOPIC), ("Service", SERVICE),
                         ("LogGroup", LOG_GROUP)):  # fmt: skip
        if needle in text:
            return kind
    return f"other: {text}"


# --- Conditions ------------------------------------------------------------------------------------------------------
def evaluate(node: Any, conditions: dict[str, Any], params: dict[str, str]) -> Any:
    """A condition expression (Fn::Equals, Fn::Not, Fn::And, Fn::Or, Condition, Ref) with the given parameters."""
    if isinstance(node, dict) and len(node) == 1:
        (fn, arg), = node.items()
        if fn == "Ref":
            return params.get(arg, f"<{arg}>")
        if fn == "Condition":
            return evaluate(conditions[arg], conditions, params)
        if fn == "Fn::Equals":
            a, b = (evaluate(x, conditions, params) for x in arg)
            return str(a) == str(b)
        if fn == "Fn::Not":
            return not evaluate(arg[0], conditions, params)
        if fn == "Fn::And":
            return all(evaluate(x, conditions, params) for x in arg)
        if fn == "Fn::Or":
            return any(evaluate(x, conditions, params) for x in arg)
        raise AssertionError(f"condition function {fn} not handled here")
    return node


def condition_parameters(doc: dict[str, Any]) -> set[str]:
    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if "Ref" in node and isinstance(node["Ref"], str):
                yield node["Ref"]
            for v in node.values():
                yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    return {r for r in refs(doc.get("Conditions", {})) if not r.startswith("AWS::")}


def combinations(docs: dict[str, dict[str, Any]]) -> Iterator[dict[str, dict[str, str]]]:
    """Every combination of values of the parameters the Conditions read: each allowed value where the parameter
    has AllowedValues, else its default and a non-empty value. Yields {stem: {parameter: value}}."""
    choices: list[tuple[str, str, list[str]]] = []
    for stem, doc in docs.items():
        for name in sorted(condition_parameters(doc)):
            decl = doc["Parameters"][name]
            values = [str(v) for v in decl.get("AllowedValues", [])] or sorted({str(decl.get("Default", "")), "x"})
            choices.append((stem, name, values))
    for picked in itertools.product(*(values for _, _, values in choices)):
        out: dict[str, dict[str, str]] = {stem: {} for stem in docs}
        for (stem, name, _), value in zip(choices, picked, strict=True):
            out[stem][name] = value
        yield out


def resolve(node: Any, conditions: dict[str, Any], params: dict[str, str]) -> Any:
    """Fn::If resolved (AWS::NoValue dropped) in a policy document."""
    if isinstance(node, dict):
        if set(node) == {"Fn::If"}:
            name, yes, no = node["Fn::If"]
            return resolve(yes if evaluate(conditions[name], conditions, params) else no, conditions, params)
        return {k: resolve(v, conditions, params) for k, v in node.items()}
    if isinstance(node, list):
        items = [resolve(v, conditions, params) for v in node]
        return [i for i in items if i != {"Ref": "AWS::NoValue"}]
    return node


def attached_statements(docs: dict[str, dict[str, Any]], role: str,
                        values: dict[str, dict[str, str]]) -> list[dict[str, Any]]:  # fmt: skip
    """The Allow statements of every policy attached to `role` in this combination of parameter values."""
    home = ROLE_TEMPLATE[role]
    statements: list[dict[str, Any]] = []
    for stem, doc in docs.items():
        conditions, params = doc.get("Conditions", {}), values[stem]
        for logical_id, res in doc["Resources"].items():
            if "Condition" in res and not evaluate(conditions[res["Condition"]], conditions, params):
                continue
            props = resolve(res.get("Properties", {}), conditions, params)
            documents = []
            if stem == home and logical_id == role:
                assert "ManagedPolicyArns" not in props, role
                documents = [p["PolicyDocument"] for p in props.get("Policies", [])]
            elif res["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
                targets = json.dumps(props.get("Roles", []))
                local = stem == home and {"Ref": role} in props.get("Roles", [])
                imported = stem != home and f"-{role}Name" in targets
                if local or imported:
                    documents = [props["PolicyDocument"]]
            for document in documents:
                statements += [s for s in document["Statement"] if s["Effect"] == "Allow"]
    return statements


def allows(statements: list[dict[str, Any]], call: Call) -> bool:
    for st in statements:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        if call.action in actions and call.resource in {kind_of(r) for r in resources}:
            return True
    return False


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
@pytest.mark.system
def test_every_call_of_a_role_s_code_is_allowed_in_every_configuration(config_name: str) -> None:
    docs = templates(CONFIGS[config_name])
    combos = list(combinations(docs))
    if config_name == "default":  # the switches the issue names are among the combinations
        names = {name for combo in combos for stem in combo.values() for name in stem}
        assert {"PropagateDeletes", "FinderSchedule", "SourceKmsKeyArn", "LaunchType"} <= names
    missing = []
    for values in combos:
        for role in ROLE_TEMPLATE:
            statements = attached_statements(docs, role, values)
            missing += [(role, c.action, c.resource, values) for c in CALLS if c.role == role
                        and made(c, values) and not allows(statements, c)]  # fmt: skip
    assert not missing, f"{len(missing)} call(s) not allowed, e.g. {missing[:3]}"


def made(call: Call, values: dict[str, dict[str, str]]) -> bool:
    return not call.only_if or any(stem.get(call.only_if) for stem in values.values())


def granted(statements: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(action, kind_of(resource)) for st in statements
            for action in (st["Action"] if isinstance(st["Action"], list) else [st["Action"]])
            for resource in (st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]])}  # fmt: skip


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
def test_no_role_is_granted_anything_its_code_does_not_call(config_name: str) -> None:
    """The reverse: every (action, resource) a role's policies allow is in CALLS for that configuration. A grant
    the code never uses (the task role's ConditionCheckItem, PutItem on the transfers table, UpdateItem on the
    parts table; scale_in's GetItem) is one more thing a compromised component could do."""
    docs = templates(CONFIGS[config_name])
    extra = set()
    for values in combinations(docs):
        for role in ROLE_TEMPLATE:
            expected = {(c.action, c.resource) for c in CALLS if c.role == role and made(c, values)}
            extra |= {(role, *g) for g in granted(attached_statements(docs, role, values)) - expected}
    assert not extra, f"granted but never called: {sorted(extra)}"


def test_the_table_names_only_roles_and_resources_the_templates_have() -> None:
    """A typo in CALLS would make the check above vacuous: every (role, kind) pair is one the templates grant
    something on, and every role's code appears in the table."""
    docs = templates(StackConfig())
    values = next(combinations(docs))
    assert {c.role for c in CALLS} == set(ROLE_TEMPLATE)
    for role in ROLE_TEMPLATE:
        granted = {kind_of(r) for st in attached_statements(docs, role, values)
                   for r in (st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]])}  # fmt: skip
        assert not [k for k in granted if k.startswith("other")], (role, granted)
        assert {c.resource for c in CALLS if c.role == role and made(c, values)} <= granted, role


def test_the_recopy_path_no_longer_swallows_access_denied() -> None:
    """The splitter's re-copy had a fallback for a role without the parts-table rights; the right is always there
    now, so an AccessDenied is a real error and must surface (the function fails, S3 retries, then the DLQ)."""
    import inspect

    from s3sync.transfer import intake

    source = inspect.getsource(intake.recopy)
    assert "AccessDenied" not in source and "except" not in source
