"""Local IAM: every component of `s3sync local` acts with the permissions of its own role, as in AWS.

Each AWS call a function or a worker makes is seen by a botocore event hook (`before-parameter-build`) on the
clients its `Runtime` builds (`Enforcer.instrument`), turned into the request IAM would authorize: action, resource
ARN and condition keys, built from the call's parameters (`requests_for`). The request is evaluated against the
statements of the component's role, taken from the rendered templates (`s3sync.local.stacks`), by a small evaluator
(`evaluate`). A call the role does not allow fails as AWS fails it, with a ClientError `AccessDenied` naming the
action, the resource and the role, before anything is sent; every refusal is also kept (`CallLedger`), so that the
runner fails the run even where the code catches the error and carries on.

Why our own evaluator: moto can authorize signed requests (`INITIAL_NO_AUTH_ACTION_COUNT`), but it works out the
resource of a request only for S3, SQS, IAM and STS (moto 5's core/responses.py, `_determine_resource`); for
DynamoDB, SNS, ECS, Secrets Manager and CloudWatch it evaluates against "*", so a statement scoped to a table ARN
never matches there.

What is evaluated: the role's identity-based policies (inline, and managed policies attached to it), the statements
of the resource-based policies the templates create that apply to every principal or name the role, Allow and
Deny, Action/NotAction, Resource/NotResource with wildcards, Principal (resource-based statements), and the condition
operators in `_OPERATORS`. Calls made with other credentials (the destination bucket in China, reached with the
China account's access keys) are recorded but not evaluated: the role plays no part in them.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("s3sync.local.iam")

#: Environment variable, set only by `s3sync local` on its worker processes: path of a JSON file holding the
#: worker's role (`Enforcer.to_file`). `s3sync.transfer.runtime.Runtime` instruments its clients with it when set.
ROLE_POLICY_ENV = "S3SYNC_LOCAL_ROLE_POLICY"

#: Sides of a component's clients: "control" (SQS, DynamoDB, ... with the role), "source" (the source bucket, with
#: the role in AWS) and "dest" (the destination bucket in China, with the China account's keys: recorded only).
ROLE_SIDES = ("control", "source")
DEST_SIDE = "dest"
DEST_REASON = "destination bucket: signed with the China account's access keys, not the role"


class PolicyError(ValueError):
    """A policy uses something this evaluator does not model: refused loudly rather than guessed."""


# --- policies ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stmt:
    """One policy statement and where it comes from (for messages: "SplitterRole/SplitterRolePolicy #3")."""

    source: str
    doc: Mapping[str, Any]
    resource_based: bool = False


@dataclass(frozen=True)
class Role:
    """A role as the evaluator sees it: its name, ARN and every statement that applies to its requests."""

    name: str  # for messages, e.g. "SplitterRole (lambda.yaml)"
    arn: str  # arn:<partition>:iam::<account>:role/<physical name>
    statements: tuple[Stmt, ...]
    session: str = "local"  # the role session name (Lambda: the function name; ECS: the task id)

    @property
    def session_arn(self) -> str:
        """The assumed-role ARN AWS names in an AccessDenied message."""
        head, _, name = self.arn.partition(":role/")
        return f"{head.replace(':iam:', ':sts:')}:assumed-role/{name.rsplit('/', 1)[-1]}/{self.session}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "arn": self.arn, "session": self.session,
                "statements": [asdict(s) | {"doc": dict(s.doc)} for s in self.statements]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Role:
        return cls(data["name"], data["arn"], tuple(Stmt(s["source"], s["doc"], bool(s.get("resource_based")))
                                                     for s in data["statements"]), data.get("session", "local"))

    def without(self, action: str) -> Role:
        """This role with `action` removed from every Allow statement (tests: what the run does without it)."""
        out = []
        for s in self.statements:
            actions = _as_list(s.doc.get("Action", []))
            if s.doc.get("Effect") == "Allow" and any(a.lower() == action.lower() for a in actions):
                kept = [a for a in actions if a.lower() != action.lower()]
                if not kept:
                    continue
                s = Stmt(s.source, {**s.doc, "Action": kept}, s.resource_based)
            out.append(s)
        return Role(self.name, self.arn, tuple(out), self.session)


@dataclass(frozen=True)
class Request:
    """What IAM authorizes for (part of) one API call."""

    action: str  # "dynamodb:UpdateItem"
    resource: str  # an ARN, or "*" for actions without a resource type
    context: tuple[tuple[str, Any], ...] = ()  # condition keys of this request (besides the global ones)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    why: str


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


# --- matching ---------------------------------------------------------------------------------------------------------
@lru_cache(maxsize=2048)
def _action_pattern(pattern: str) -> re.Pattern[str]:
    # "Action ... values are not case sensitive"; * and ? are wildcards (IAM JSON policy elements: Action)
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, re.IGNORECASE | re.DOTALL)


@lru_cache(maxsize=4096)
def _resource_pattern(pattern: str) -> re.Pattern[str]:
    """IAM JSON policy elements: Resource: "You can use wildcard characters (* and ?) within the individual segments
    of an ARN (the parts separated by colons) ... If the * wildcard is the last character of a resource ARN segment,
    it can expand to match beyond the colon boundaries." The sixth segment (the resource) is everything after the
    fifth colon, colons included (an S3 key may hold one), so there * and ? match any character. Case-sensitive."""
    if pattern == "*":
        return re.compile(".*", re.DOTALL)
    if "${" in pattern:
        raise PolicyError(f"policy variables are not modelled: {pattern!r}")
    out, colons = [], 0
    for i, c in enumerate(pattern):
        if c == ":":
            colons += 1
            out.append(":")
        elif c == "*":
            in_resource = colons >= 5
            at_end = i + 1 == len(pattern) or pattern[i + 1] == ":"
            out.append(".*" if in_resource or at_end else "[^:]*")
        elif c == "?":
            out.append("." if colons >= 5 else "[^:]")
        else:
            out.append(re.escape(c))
    return re.compile("".join(out), re.DOTALL)


@lru_cache(maxsize=2048)
def _like_pattern(pattern: str, ignore_case: bool = False) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _arn_like(value: str, pattern: str) -> bool:
    # Condition operators, ARN: "Each of the six colon-delimited components of the ARN is checked separately and
    # each can include multi-character match wildcards (*) or single-character match wildcards (?)."
    got, want = str(value).split(":", 5), str(pattern).split(":", 5)
    if len(got) != 6 or len(want) != 6:
        return False
    return all(_like_pattern(w).fullmatch(g) is not None for g, w in zip(got, want, strict=True))


def _number(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise PolicyError(f"not a number in a Numeric condition: {text!r}") from None


def _bool(text: Any) -> str:
    return str(text).lower()


#: Condition operator -> (test of one request value against one policy value, negated). "Negated" operators hold
#: when no policy value matches (and, per the docs below, when the key is absent).
_OPERATORS: dict[str, tuple[Callable[[Any, Any], bool], bool]] = {
    "StringEquals": (lambda v, p: str(v) == str(p), False),
    "StringNotEquals": (lambda v, p: str(v) == str(p), True),
    "StringEqualsIgnoreCase": (lambda v, p: str(v).lower() == str(p).lower(), False),
    "StringNotEqualsIgnoreCase": (lambda v, p: str(v).lower() == str(p).lower(), True),
    "StringLike": (lambda v, p: _like_pattern(str(p)).fullmatch(str(v)) is not None, False),
    "StringNotLike": (lambda v, p: _like_pattern(str(p)).fullmatch(str(v)) is not None, True),
    "ArnEquals": (_arn_like, False),
    "ArnLike": (_arn_like, False),
    "ArnNotEquals": (_arn_like, True),
    "ArnNotLike": (_arn_like, True),
    "Bool": (lambda v, p: _bool(v) == _bool(p), False),
    "NumericEquals": (lambda v, p: _number(v) == _number(p), False),
    "NumericNotEquals": (lambda v, p: _number(v) == _number(p), True),
    "NumericLessThan": (lambda v, p: _number(v) < _number(p), False),
    "NumericLessThanEquals": (lambda v, p: _number(v) <= _number(p), False),
    "NumericGreaterThan": (lambda v, p: _number(v) > _number(p), False),
    "NumericGreaterThanEquals": (lambda v, p: _number(v) >= _number(p), False),
}


def _parse_operator(name: str) -> tuple[str, str, bool]:
    """'ForAnyValue:StringLikeIfExists' -> ('ForAnyValue', 'StringLike', True)."""
    qualifier, _, base = name.rpartition(":")
    if qualifier not in ("", "ForAllValues", "ForAnyValue"):
        raise PolicyError(f"unknown condition set operator {qualifier!r} in {name!r}")
    if_exists = base.endswith("IfExists")
    if if_exists:
        base = base[: -len("IfExists")]
    if base != "Null" and base not in _OPERATORS:
        raise PolicyError(f"condition operator {name!r} is not modelled (known: Null, {', '.join(_OPERATORS)})")
    return qualifier, base, if_exists


def conditions_hold(block: Mapping[str, Mapping[str, Any]], context: Mapping[str, Any]) -> bool:
    """Every operator and every key of a Condition block must hold (they are ANDed; a key's values are ORed).

    Condition operators: "If the key that you specify in a policy condition is not present in the request context,
    the values do not match and the condition is false. If the policy condition requires that the key is not
    matched, such as StringNotLike or ArnNotLike, and the right key is not present, the condition is true. This
    logic applies to all condition operators except ...IfExists and Null check." Condition key names are not case
    sensitive; ForAllValues holds for an absent key, ForAnyValue does not (set operators for multivalued keys).
    """
    ctx = {str(k).lower(): v for k, v in context.items()}
    for operator, keys in block.items():
        qualifier, base, if_exists = _parse_operator(operator)
        for key, wanted in keys.items():
            values = _as_list(wanted)
            present = key.lower() in ctx and ctx[key.lower()] is not None
            if base == "Null":  # "Null": true -> the key must be absent; false -> present
                if any(_bool(v) == "true" for v in values) == present:
                    return False
                continue
            test, negated = _OPERATORS[base]
            if not present:
                if if_exists or qualifier == "ForAllValues" or (negated and qualifier != "ForAnyValue"):
                    continue
                return False
            got = _as_list(ctx[key.lower()])

            held = [any(test(v, p) for p in values) != negated for v in got]  # each value, negation applied
            ok = all(held) if qualifier == "ForAllValues" else any(held)
            if not ok:
                return False
    return True


def _principal_matches(principal: Any, principals: Sequence[str]) -> bool:
    """Resource-based statements: "*" (or {"AWS": "*"}) is everyone; {"AWS": [ARNs]} names roles or sessions;
    {"Service": [names]} names services (`principals` then holds the service's name, e.g. cloudwatch.amazonaws.com,
    for a request a service makes: `service_decision`). A service principal never matches a role's request."""
    if principal == "*":
        return True
    if isinstance(principal, Mapping):
        if "*" in [str(p) for p in _as_list(principal.get("AWS", []))]:
            return True
        named = [str(p) for key in ("AWS", "Service") for p in _as_list(principal.get(key, []))]
        return any(p in principals for p in named)
    return False


def _statement_applies(st: Mapping[str, Any], req: Request, context: Mapping[str, Any],
                       principals: Sequence[str], resource_based: bool) -> bool:
    if resource_based:
        if "Principal" in st and not _principal_matches(st["Principal"], principals):
            return False
        if "NotPrincipal" in st and _principal_matches(st["NotPrincipal"], principals):
            return False
    if "Action" in st:
        if not any(_action_pattern(str(a)).fullmatch(req.action) for a in _as_list(st["Action"])):
            return False
    elif "NotAction" in st:
        if any(_action_pattern(str(a)).fullmatch(req.action) for a in _as_list(st["NotAction"])):
            return False
    else:
        raise PolicyError(f"statement without Action or NotAction: {dict(st)}")
    if "Resource" in st:
        if not any(_resource_pattern(str(r)).fullmatch(req.resource) for r in _as_list(st["Resource"])):
            return False
    elif "NotResource" in st:
        if any(_resource_pattern(str(r)).fullmatch(req.resource) for r in _as_list(st["NotResource"])):
            return False
    else:
        raise PolicyError(f"statement without Resource or NotResource: {dict(st)}")
    return conditions_hold(st.get("Condition") or {}, context)


def evaluate(req: Request, statements: Iterable[Stmt], context: Mapping[str, Any] | None = None,
             principals: Sequence[str] = ()) -> Decision:
    """Decide one request within one account (policy evaluation logic, single account):

    - "A request results in an explicit deny if an applicable policy includes a Deny statement. If policies that
      apply to a request include an Allow statement and a Deny statement, the Deny statement trumps the Allow
      statement." (The difference between explicit and implicit denies)
    - "If either the identity-based policy or the resource-based policy within the same account allows the request
      and the other doesn't, the request is still allowed." (Policy evaluation for requests within a single account)
    - "An implicit denial occurs when there is no applicable Deny statement but also no applicable Allow statement."
    """
    ctx = {**dict(req.context), **(context or {})}
    allowed_by = ""
    for s in statements:
        effect = s.doc.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise PolicyError(f"statement {s.source} has Effect {effect!r}")
        if not _statement_applies(s.doc, req, ctx, principals, s.resource_based):
            continue
        if effect == "Deny":
            kind = "a resource-based" if s.resource_based else "an identity-based"
            return Decision(False, f"with an explicit deny in {kind} policy ({s.source})")
        allowed_by = allowed_by or s.source
    if allowed_by:
        return Decision(True, f"allowed by {allowed_by}")
    return Decision(False, f"because no identity-based policy allows the {req.action} action")


def service_decision(service: str, req: Request, statements: Iterable[Stmt], source_arn: str,
                     source_account: str) -> Decision:
    """A request an AWS service makes on behalf of one of the account's resources (CloudWatch publishing an alarm's
    notification to SNS): only resource-based statements can allow it, and the request carries the resource's ARN
    and account as aws:SourceArn / aws:SourceAccount ("This key is included in the request context only if
    accessing a resource triggers an AWS service to call another service on behalf of the resource owner", IAM
    global condition keys); the service's own name is the principal."""
    context = {"aws:SourceArn": source_arn, "aws:SourceAccount": source_account, "aws:SecureTransport": "true",
               "aws:PrincipalServiceName": service}
    return evaluate(req, [s for s in statements if s.resource_based], context, (service,))


# --- API calls -> IAM requests ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Where:
    """The account the local resources live in, and what IAM resolves that a call's parameters do not say."""

    partition: str = "aws"
    region: str = "us-east-1"
    account: str = "123456789012"
    secrets: Mapping[str, str] = field(default_factory=dict)  # secret name -> full ARN (SecretId may be a name)


class NotModelled(Exception):
    """A call whose IAM request this module cannot work out: it is refused, naming what to teach `requests_for`."""


# IAM service prefix where botocore's service name differs (Service Authorization Reference).
_PREFIX = {"dynamodbstreams": "dynamodb", "cloudwatch": "cloudwatch", "logs": "logs"}
# Calls that need no permission ("No permissions are required to perform this operation": sts:GetCallerIdentity).
_FREE = {("sts", "GetCallerIdentity")}

# S3 operations whose IAM action differs from their name (Amazon S3: required permissions for API operations):
# HEAD needs s3:GetObject; every step of a multipart upload is s3:PutObject; ListParts is
# s3:ListMultipartUploadParts; listing a bucket (and HeadBucket) is s3:ListBucket.
_S3_ACTIONS = {
    "HeadObject": "s3:GetObject", "GetObject": "s3:GetObject", "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject", "UploadPart": "s3:PutObject", "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload", "ListParts": "s3:ListMultipartUploadParts",
    "DeleteObject": "s3:DeleteObject", "GetObjectTagging": "s3:GetObjectTagging",
    "PutObjectTagging": "s3:PutObjectTagging", "ListObjectsV2": "s3:ListBucket", "ListObjects": "s3:ListBucket",
    "HeadBucket": "s3:ListBucket", "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "ListObjectVersions": "s3:ListBucketVersions", "GetBucketLocation": "s3:GetBucketLocation",
    "CreateBucket": "s3:CreateBucket", "PutBucketNotificationConfiguration": "s3:PutBucketNotification",
    "GetBucketNotificationConfiguration": "s3:GetBucketNotification",
}
# A version-specific read or delete is authorized as its own action.
_S3_VERSIONED = {"s3:GetObject": "s3:GetObjectVersion", "s3:DeleteObject": "s3:DeleteObjectVersion",
                 "s3:GetObjectTagging": "s3:GetObjectVersionTagging"}
# SQS: "You cannot set permissions explicitly for SendMessageBatch, DeleteMessageBatch, or
# ChangeMessageVisibilityBatch. Instead, setting permissions for SendMessage, DeleteMessage, or
# ChangeMessageVisibility sets permissions for the corresponding batch versions of the actions." (SQS batch actions)
_SQS_BATCH = {"SendMessageBatch": "SendMessage", "DeleteMessageBatch": "DeleteMessage",
              "ChangeMessageVisibilityBatch": "ChangeMessageVisibility"}
# DynamoDB transactions: "Permissions for Put, Update, Delete, and Get actions are governed by the permissions used
# for the underlying PutItem, UpdateItem, DeleteItem, and GetItem operations. For the ConditionCheck action, you can
# use the dynamodb:ConditionCheckItem permission" (Using IAM with DynamoDB transactions).
_DDB_TRANSACT = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                 "ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}


def s3_arn(partition: str, bucket: str, key: str | None = None) -> str:
    return f"arn:{partition}:s3:::{bucket}" + (f"/{key}" if key is not None else "")


def queue_arn(url: str, where: Where, region: str) -> str:
    """arn:...:sqs:<region>:<account>:<name> from https://sqs.<region>.amazonaws.com/<account>/<name> (or the
    local server's http://host:port/<account>/<name>)."""
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    if len(path) < 2:
        raise NotModelled(f"queue URL {url!r} has no /<account>/<name> path")
    host = parts.hostname or ""
    m = re.match(r"sqs\.([a-z0-9-]+)\.amazonaws\.com", host)
    return f"arn:{where.partition}:sqs:{m.group(1) if m else region}:{path[-2]}:{path[-1]}"


def table_arn(name: str, where: Where, region: str) -> str:
    return name if name.startswith("arn:") else f"arn:{where.partition}:dynamodb:{region}:{where.account}:table/{name}"


def _ecs_name(value: str) -> str:
    return value.rsplit("/", 1)[-1]


def requests_for(service: str, operation: str, params: Mapping[str, Any], where: Where, region: str | None = None,
                 stream_of: Callable[[str], str | None] = lambda _it: None) -> list[Request]:
    """The IAM requests AWS authorizes for one call (several for a transaction or a batch over tables)."""
    region = region or where.region
    p = params
    if (service, operation) in _FREE:
        return []
    if service == "s3":
        bucket = str(p.get("Bucket", ""))
        if not bucket:
            return [Request(f"s3:{operation}", "*")]
        if operation in ("CopyObject", "UploadPartCopy"):
            src = p.get("CopySource")
            src_bucket, src_key = ((src["Bucket"], src["Key"]) if isinstance(src, Mapping)
                                   else str(src).lstrip("/").split("/", 1))
            return [Request("s3:PutObject", s3_arn(where.partition, bucket, str(p["Key"]))),
                    Request("s3:GetObject", s3_arn(where.partition, src_bucket, src_key))]
        if operation == "DeleteObjects":
            return [Request("s3:DeleteObject", s3_arn(where.partition, bucket, o["Key"]))
                    for o in (p.get("Delete") or {}).get("Objects", [])]
        action = _S3_ACTIONS.get(operation, f"s3:{operation}")
        if p.get("VersionId"):
            action = _S3_VERSIONED.get(action, action)
        context: tuple[tuple[str, Any], ...] = ()
        if action == "s3:ListBucket" and "Prefix" in p:
            context = (("s3:prefix", p["Prefix"]),)
        if p.get("ServerSideEncryption"):
            context += (("s3:x-amz-server-side-encryption", p["ServerSideEncryption"]),)
        key = p.get("Key")
        return [Request(action, s3_arn(where.partition, bucket, str(key) if key is not None else None), context)]
    if service == "sqs":
        action = f"sqs:{_SQS_BATCH.get(operation, operation)}"
        if "QueueUrl" in p:
            return [Request(action, queue_arn(str(p["QueueUrl"]), where, region))]
        if "QueueName" in p:
            owner = p.get("QueueOwnerAWSAccountId") or where.account
            return [Request(action, f"arn:{where.partition}:sqs:{region}:{owner}:{p['QueueName']}")]
        return [Request(action, "*")]
    if service == "dynamodb":
        if operation in ("TransactWriteItems", "TransactGetItems"):
            out = []
            for item in p.get("TransactItems", []):
                for kind, spec in item.items():
                    out.append(Request(f"dynamodb:{_DDB_TRANSACT[kind]}", table_arn(spec["TableName"], where, region),
                                       (("dynamodb:EnclosingOperation", operation),)))
            return out
        if operation in ("BatchWriteItem", "BatchGetItem"):
            return [Request(f"dynamodb:{operation}", table_arn(t, where, region)) for t in p.get("RequestItems", {})]
        if "TableName" in p:
            arn = table_arn(str(p["TableName"]), where, region)
            if p.get("IndexName"):
                arn += f"/index/{p['IndexName']}"
            return [Request(f"dynamodb:{operation}", arn)]
        return [Request(f"dynamodb:{operation}", "*")]
    if service == "dynamodbstreams":
        if "StreamArn" in p:
            return [Request(f"dynamodb:{operation}", str(p["StreamArn"]))]
        if operation == "GetRecords":
            stream = stream_of(str(p.get("ShardIterator", "")))
            if stream is None:
                raise NotModelled("GetRecords with a shard iterator this client did not get from GetShardIterator")
            return [Request("dynamodb:GetRecords", stream)]
        return [Request(f"dynamodb:{operation}", "*")]  # ListStreams: no resource type
    if service == "sns":
        topic = p.get("TopicArn") or p.get("TargetArn")
        return [Request(f"sns:{'Publish' if operation == 'PublishBatch' else operation}", str(topic or "*"))]
    if service == "ecs":
        cluster = _ecs_name(str(p.get("cluster") or "default"))
        services = [str(s) for s in _as_list(p.get("services", p.get("service", [])))]
        if services:
            return [Request(f"ecs:{operation}", s if s.startswith("arn:") else
                            f"arn:{where.partition}:ecs:{region}:{where.account}:service/{cluster}/{s}")
                    for s in services]
        return [Request(f"ecs:{operation}", f"arn:{where.partition}:ecs:{region}:{where.account}:cluster/{cluster}")]
    if service == "secretsmanager":
        secret = str(p.get("SecretId", ""))
        if secret and not secret.startswith("arn:"):
            secret = where.secrets.get(secret, f"arn:{where.partition}:secretsmanager:{region}:{where.account}"
                                               f":secret:{secret}")
        return [Request(f"secretsmanager:{operation}", secret or "*")]
    if service == "cloudwatch":
        if operation == "PutMetricData":  # no resource type; the namespace is a condition key
            return [Request("cloudwatch:PutMetricData", "*", (("cloudwatch:namespace", p.get("Namespace")),))]
        if "AlarmName" in p or "AlarmNames" in p:
            return [Request(f"cloudwatch:{operation}",
                            f"arn:{where.partition}:cloudwatch:{region}:{where.account}:alarm:{n}")
                    for n in _as_list(p.get("AlarmNames", p.get("AlarmName")))]
        return [Request(f"cloudwatch:{operation}", "*")]
    if service == "ssm":  # a parameter's ARN: parameter/<name without its leading slash>
        names = [str(n) for n in _as_list(p.get("Names", p.get("Name", [])))]
        return [Request(f"ssm:{operation}", f"arn:{where.partition}:ssm:{region}:{where.account}:parameter/"
                        + n.lstrip("/")) for n in names] or [Request(f"ssm:{operation}", "*")]
    if service == "kms":
        key = str(p.get("KeyId", ""))
        if key and not key.startswith("arn:"):
            kind = key if key.startswith("alias/") else f"key/{key}"
            key = f"arn:{where.partition}:kms:{region}:{where.account}:{kind}"
        return [Request(f"kms:{operation}", key or "*")]
    raise NotModelled(f"{service}.{operation}: no rule for its IAM resource (add one to s3sync.local.iam.requests_for)")


# --- the record of calls ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Denial:
    component: str
    role: str
    operation: str
    action: str
    resource: str
    why: str

    def line(self) -> str:
        return (f"AccessDenied: {self.component} (role {self.role}) may not {self.action} on {self.resource} "
                f"[{self.operation}] {self.why}")


class CallLedger:
    """Every call each component made (counted by component, side, action and resource) and every refusal.

    `denials_path`: refusals are also appended there at once, one JSON line each (worker processes: the runner reads
    the file, so that a refusal inside a worker fails the run too)."""

    MAX_DISTINCT = 20_000  # distinct (component, side, action, resource) entries kept; beyond, only totals grow

    def __init__(self, denials_path: Path | None = None) -> None:
        self.denials_path = denials_path
        self.calls: Counter[tuple[str, str, str, str, str]] = Counter()
        self.total = 0
        self.denials: list[Denial] = []
        self._lock = threading.Lock()

    def record(self, component: str, side: str, action: str, resource: str, outcome: str) -> None:
        key = (component, side, action, resource, outcome)
        with self._lock:
            self.total += 1
            if key in self.calls or len(self.calls) < self.MAX_DISTINCT:
                self.calls[key] += 1

    def deny(self, denial: Denial) -> None:
        with self._lock:
            self.denials.append(denial)
            if self.denials_path is not None:
                with open(self.denials_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(asdict(denial)) + "\n")

    def dump(self, path: Path) -> None:
        with self._lock:
            rows = [{"component": c, "side": s, "action": a, "resource": r, "outcome": o, "count": n}
                    for (c, s, a, r, o), n in sorted(self.calls.items())]
        path.write_text(json.dumps({"total": self.total, "calls": rows}, indent=1), encoding="utf-8")

    @staticmethod
    def read_denials(path: Path) -> list[Denial]:
        if not path.exists():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(Denial(**json.loads(line)))
            except (ValueError, TypeError):  # a line still being written (read again when the file grows)
                continue
        return out


# --- enforcement on a component's clients -----------------------------------------------------------------------------
_ACCESS_DENIED_CODE = {"s3": "AccessDenied", "sqs": "AccessDenied", "sns": "AuthorizationError",
                       "cloudwatch": "AccessDenied"}  # others: AccessDeniedException (JSON protocols)


class Enforcer:
    """Makes one component's clients act with one role: `instrument(side, client)` for every client it builds."""

    def __init__(self, component: str, role: Role, where: Where, ledger: CallLedger, *, enforce: bool = True,
                 aliases: Mapping[str, str] | None = None) -> None:
        self.component = component
        self.role = role
        self.where = where
        self.ledger = ledger
        self.enforce = enforce
        # resource ARN -> the ARN it stands in for (the runner's fault-injection intake queue plays the part queue)
        self.aliases = dict(aliases or {})
        self._iterators: dict[str, str] = {}  # stream shard iterator -> its stream ARN (GetRecords names none)
        self._principals = (role.arn, role.session_arn)
        self._context = {"aws:SecureTransport": "true", "aws:PrincipalArn": role.arn,
                         "aws:PrincipalAccount": where.account, "aws:PrincipalType": "AssumedRole"}
        self._cache: dict[tuple[Request, str], Decision] = {}

    # -- decisions --
    def decide(self, req: Request, region: str) -> Decision:
        key = (req, region)
        hit = self._cache.get(key)
        if hit is None:
            # aws:SecureTransport is what AWS would see: the SDK calls AWS over HTTPS; the local servers speak plain
            # HTTP, which the templates' DenyInsecureTransport statements would otherwise refuse
            hit = evaluate(req, self.role.statements, {**self._context, "aws:RequestedRegion": region},
                           self._principals)
            if len(self._cache) > 50_000:
                self._cache.clear()
            self._cache[key] = hit
        return hit

    def allows(self, action: str, resource: str, region: str | None = None) -> bool:
        return self.decide(Request(action, resource), region or self.where.region).allowed

    # -- hooks --
    def instrument(self, side: str, client: Any) -> Any:
        """Register the hooks on `client`; `side` is "control", "source" or "dest" (see ROLE_SIDES)."""
        service = client.meta.service_model.service_name
        region = client.meta.region_name or self.where.region
        events = client.meta.events
        if side == DEST_SIDE:
            events.register("before-parameter-build", self._recorder(service, region))
            return client
        events.register("before-parameter-build", self._authorizer(client, side, service, region))
        if service == "s3":
            events.register("after-call.s3", self._hide_missing(region))
        if service == "dynamodbstreams":
            events.register("after-call", self._track_iterators)
        return client

    def _recorder(self, service: str, region: str) -> Callable[..., None]:
        def record(params: Mapping[str, Any], model: Any, **_: Any) -> None:
            try:
                reqs = requests_for(service, model.name, params, self.where, region)
            except NotModelled:
                reqs = [Request(f"{service}:{model.name}", "*")]
            for r in reqs:
                self.ledger.record(self.component, DEST_SIDE, r.action, r.resource, "not evaluated: " + DEST_REASON)
        return record

    def _authorizer(self, client: Any, side: str, service: str, region: str) -> Callable[..., None]:
        def authorize(params: Mapping[str, Any], model: Any, context: dict[str, Any] | None = None,
                      **_: Any) -> None:
            op = model.name
            if context is not None:
                context["s3sync_iam"] = {"bucket": params.get("Bucket"), "stream": params.get("StreamArn")
                                         or self._iterators.get(str(params.get("ShardIterator", "")))}
            try:
                reqs = requests_for(service, op, params, self.where, region, self._iterators.get)
            except NotModelled as exc:
                self._refuse(client, service, op, Request(f"{service}:{op}", "?"), f"not modelled locally: {exc}")
                return
            for r in reqs:
                resource = self.aliases.get(r.resource, r.resource)
                req = r if resource == r.resource else Request(r.action, resource, r.context)
                d = self.decide(req, region)
                self.ledger.record(self.component, side, r.action, r.resource, "allowed" if d.allowed else "DENIED")
                if not d.allowed:
                    self._refuse(client, service, op, r, d.why)
        return authorize

    def _refuse(self, client: Any, service: str, operation: str, req: Request, why: str) -> None:
        denial = Denial(self.component, self.role.name, operation, req.action, req.resource, why)
        self.ledger.deny(denial)
        log.error("access denied", extra={"component": self.component, "role": self.role.name,
                                          "action": req.action, "resource": req.resource, "reason": why})
        if not self.enforce:
            return
        code = _ACCESS_DENIED_CODE.get(service, "AccessDeniedException")
        message = (f"User: {self.role.session_arn} is not authorized to perform: {req.action} on resource: "
                   f"{req.resource} {why} (s3sync local: role {self.role.name})")
        raise client.exceptions.from_code(code)(
            {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 403}}, operation)

    def _hide_missing(self, region: str) -> Callable[..., None]:
        """HeadObject / GetObject: "If the object you request doesn't exist, the error that Amazon S3 returns depends
        on whether you also have the s3:ListBucket permission. If you have the s3:ListBucket permission on the
        bucket, Amazon S3 returns an HTTP status code 404 Not Found error. If you don't have the s3:ListBucket
        permission, Amazon S3 returns an HTTP status code 403 Forbidden error." The local servers always say 404."""
        def hide(http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any] | None = None,
                 **_: Any) -> None:
            if getattr(http_response, "status_code", 200) != 404 or model.name not in ("HeadObject", "GetObject"):
                return
            error = parsed.get("Error") or {}
            if error.get("Code") not in ("NoSuchKey", "404", "NotFound", "NoSuchVersion"):
                return
            bucket = ((context or {}).get("s3sync_iam") or {}).get("bucket")
            if not bucket or self.allows("s3:ListBucket", s3_arn(self.where.partition, bucket), region):
                return
            head = model.name == "HeadObject"
            parsed["Error"] = {"Code": "403" if head else "AccessDenied", "Message": "Forbidden" if head
                               else "Access Denied"}
            parsed.setdefault("ResponseMetadata", {})["HTTPStatusCode"] = 403
            self.ledger.record(self.component, "source", "s3:ListBucket", s3_arn(self.where.partition, bucket),
                               "absent: a missing key answered 403, as AWS does without s3:ListBucket")
        return hide

    def _track_iterators(self, parsed: dict[str, Any], model: Any, context: dict[str, Any] | None = None,
                         **_: Any) -> None:
        if model.name not in ("GetShardIterator", "GetRecords"):
            return
        stream = ((context or {}).get("s3sync_iam") or {}).get("stream")
        nxt = parsed.get("ShardIterator") or parsed.get("NextShardIterator")
        if stream and nxt:
            if len(self._iterators) > 10_000:
                self._iterators.clear()
            self._iterators[str(nxt)] = str(stream)

    # -- worker processes --
    def to_file(self, path: Path, denials_path: Path, calls_path: Path) -> Path:
        path.write_text(json.dumps({
            "component": self.component, "role": self.role.to_json(), "where": asdict(self.where),
            "aliases": self.aliases, "enforce": self.enforce, "denials": str(denials_path),
            "calls": str(calls_path)}, indent=1), encoding="utf-8")
        return path

    @classmethod
    def from_file(cls, path: str | Path) -> Enforcer:
        """In a worker process: the role the runner wrote; refusals go to its denials file, and the calls made are
        written to `<calls>-<pid>.json` when the process exits."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        ledger = CallLedger(Path(data["denials"]))
        enforcer = cls(data["component"], Role.from_json(data["role"]), Where(**data["where"]), ledger,
                       enforce=bool(data.get("enforce", True)), aliases=data.get("aliases") or {})
        calls = Path(f"{data['calls']}-{os.getpid()}.json")
        atexit.register(lambda: ledger.dump(calls))
        return enforcer


def client_hook(enforcer: Enforcer) -> Callable[[str, Any], Any]:
    """The `on_client(side, client)` callback `s3sync.transfer.runtime.Runtime` takes."""
    return enforcer.instrument


def hook_from_env(env: Mapping[str, str]) -> Callable[[str, Any], Any] | None:
    """`Runtime`'s hook in a worker process started by `s3sync local` (ROLE_POLICY_ENV set), else None."""
    path = env.get(ROLE_POLICY_ENV)
    return client_hook(Enforcer.from_file(path)) if path else None


__all__ = ["CallLedger", "DEST_SIDE", "Decision", "Denial", "Enforcer", "NotModelled", "PolicyError", "ROLE_POLICY_ENV",
           "ROLE_SIDES", "Request", "Role", "Stmt", "Where", "client_hook", "conditions_hold", "evaluate",
           "hook_from_env", "requests_for", "service_decision"]
