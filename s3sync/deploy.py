"""`s3sync deploy` and `s3sync destroy`: the two stacks through the CloudFormation API.

    do_deploy(bucket="my-code", parameters={"ImageUri": ..., "DestBucket": ..., "VpcId": ..., "SubnetId": ...,
              "SourceBucketName": ..., "Email": ...}, dest_access_key_id=..., dest_secret_access_key=...)
    do_destroy()

Deploy packages (`s3sync.package.do_package`, with upload), then creates or updates the ECS stack and then the
Lambda stack from the uploaded templates (TemplateURL) through change sets, as `aws cloudformation deploy` and `sam
deploy` do: each change set's changes are printed, a removal or a replacement (a LaunchType change replaces the
service; a replaced table would lose the ledger) is executed only after a yes (`yes=True` / `--yes`), and
`execute=False` (`--no-execute`) only shows them. Then every stack event is printed as it comes
(describe_stack_events is polled) until the stack settles, then the outputs. Destroy deletes the Lambda stack, then
the ECS stack (the Lambda stack imports the ECS stack's exports). Both wait for each stack like boto3's waiters do,
but poll the events too.

Parameters: `parameters` holds `Name=value` (or `ecs.Name` / `lambda.Name` for one stack); on an update every
parameter not given keeps its previous value (UsePreviousValue), as `aws cloudformation deploy` does. The NoEcho
ones (the China keys) come only from `dest_access_key_id` / `dest_secret_access_key` (the CLI reads them from options
or S3SYNC_DEST_ACCESS_KEY_ID / S3SYNC_DEST_SECRET_ACCESS_KEY): they are never printed, and any text this module
prints or raises has them masked.

User mistakes (missing bucket or parameter, a stack in a state that cannot be updated, a failed stack operation)
raise `UserError` with one line; the CLI prints it without a traceback.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from s3sync.aws import NO_REGION, Clients, aws_errors, client_factory, redact, resolve_region
from s3sync.contract import DEFAULT_ECS_STACK, DEFAULT_LAMBDA_STACK
from s3sync.errors import UserError
from s3sync.package import DEFAULT_OUT, PackageResult, check_bucket_name, do_package, normalize_prefix
from s3sync.package.templates import inline_body, load_template, split_parameters
from s3sync.render import STACK_NAME, check_region
from s3sync.stacks import StackBuilder, StackConfig, render_all, sizes
from s3sync.stacks.common import SETTINGS_PARAMETER, settings_parameter_name
from s3sync.stacks.ecs import ssh_problems

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_cloudformation.literals import CapabilityType
    from mypy_boto3_cloudformation.type_defs import ParameterTypeDef

#: The NoEcho parameters of ecs.yaml and where the CLI takes them from.
SECRET_PARAMETERS: Mapping[str, str] = {
    "DestAccessKeyId": "--dest-access-key-id or S3SYNC_DEST_ACCESS_KEY_ID",
    "DestSecretAccessKey": "--dest-secret-access-key or S3SYNC_DEST_SECRET_ACCESS_KEY",
}
#: CLI options that set a parameter (for the "missing parameter" message).
PARAMETER_OPTIONS: Mapping[str, str] = {
    "ImageUri": "--image-uri",
    "DestBucket": "--dest-bucket",
    "DestRegion": "--dest-region",
    "DestPrefix": "--dest-prefix",
    "VpcId": "--vpc-id",
    "SubnetId": "--subnet-id",
    "LaunchType": "--launch-type",
    "SourceBucketName": "--source-bucket",
    "Email": "--email",
    **SECRET_PARAMETERS,
}

SUCCESS = {"create": "CREATE_COMPLETE", "update": "UPDATE_COMPLETE", "delete": "DELETE_COMPLETE"}
#: Stack states an update may start from.
UPDATABLE = frozenset(
    {"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE", "IMPORT_COMPLETE", "IMPORT_ROLLBACK_COMPLETE"}
)
NO_UPDATES = "No updates are to be performed"
DEFAULT_POLL_S = 5.0
DEFAULT_TIMEOUT_S = 3600.0

Echo = Callable[[str], None]


@dataclass(frozen=True)
class StackOutcome:
    name: str
    stack_id: str
    action: str  # create | update | unchanged | shown (--no-execute) | delete | absent
    status: str
    outputs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeployResult:
    package: PackageResult
    stacks: tuple[StackOutcome, ...]


# --- stacks -----------------------------------------------------------------------------------------------------------
def _message(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Message", exc))


def stack_state(cf: CloudFormationClient, name: str) -> Mapping[str, Any] | None:
    """describe_stacks of `name` (or a stack id), None when there is no such (live) stack."""
    from botocore.exceptions import ClientError

    with aws_errors(f"reading stack {name}"):
        try:
            return cf.describe_stacks(StackName=name)["Stacks"][0]
        except ClientError as exc:
            if "does not exist" in _message(exc):
                return None
            raise


def check_deployable(name: str, state: Mapping[str, Any] | None) -> str:
    """"create" or "update"; a one-line error for a stack CloudFormation cannot update now."""
    if state is None:
        return "create"
    status = state["StackStatus"]
    if status in UPDATABLE:
        return "update"
    if status == "ROLLBACK_COMPLETE":
        raise UserError(
            f"stack {name} is ROLLBACK_COMPLETE: its creation failed and it cannot be updated; run `s3sync destroy` "
            "(or delete it in the console), then deploy again"
        )
    if status == "REVIEW_IN_PROGRESS":
        raise UserError(
            f"stack {name} is REVIEW_IN_PROGRESS (made by a change set never executed): execute the change set, or "
            "run `s3sync destroy`, then deploy again"
        )
    if status.endswith("_IN_PROGRESS"):
        raise UserError(f"stack {name} is busy ({status}): wait until it settles, then run this again")
    raise UserError(
        f"stack {name} is {status} and cannot be updated: repair it in the CloudFormation console (continue the "
        "rollback, or delete it), then deploy again"
    )


class EventTail:
    """Prints a stack's events once each, oldest first, as describe_stack_events returns them (newest first)."""

    def __init__(self, cf: CloudFormationClient, stack: str | None, say: Echo) -> None:
        self.cf = cf
        self.stack = stack
        self.say = say
        self.seen: set[str] = set()
        self.failures: list[str] = []
        if stack is not None:  # events of earlier operations are history: never print them
            self.seen.update(e["EventId"] for e in self._first_page(stack))

    def _first_page(self, stack: str) -> list[Mapping[str, Any]]:
        with aws_errors(f"reading the events of {stack}"):
            return list(self.cf.describe_stack_events(StackName=stack).get("StackEvents", []))

    def poll(self) -> None:
        if self.stack is None:
            return
        new: list[Mapping[str, Any]] = []
        token = None
        with aws_errors(f"reading the events of {self.stack}"):
            while True:
                kwargs = {"StackName": self.stack, **({"NextToken": token} if token else {})}
                page = self.cf.describe_stack_events(**kwargs)
                events = page.get("StackEvents", [])
                fresh = [e for e in events if e["EventId"] not in self.seen]
                new.extend(fresh)
                token = page.get("NextToken")
                if not token or len(fresh) < len(events):  # reached what was printed before
                    break
        for event in reversed(new):  # oldest first
            self.seen.add(event["EventId"])
            self.say(format_event(event))
            status = event.get("ResourceStatus", "")
            reason = event.get("ResourceStatusReason") or ""
            if status.endswith("_FAILED") and reason and "cancelled" not in reason.lower():
                self.failures.append(f"{event.get('LogicalResourceId')}: {reason}")


def format_event(event: Mapping[str, Any]) -> str:
    ts: Any = event.get("Timestamp")  # a datetime from boto3; whatever else, as text
    when = ts.strftime("%H:%M:%S") if hasattr(ts, "strftime") else str(ts or "")
    parts = [
        when,
        event.get("StackName", ""),
        event.get("LogicalResourceId", ""),
        event.get("ResourceType", ""),
        event.get("ResourceStatus", ""),
    ]
    line = "  ".join(p for p in parts if p)
    reason = event.get("ResourceStatusReason")
    return f"{line}  {reason}" if reason else line


def wait_for_stack(
    cf: CloudFormationClient, name: str, stack_id: str, tail: EventTail, poll_s: float, timeout_s: float
) -> Mapping[str, Any]:
    """Poll events and status until the stack leaves every *_IN_PROGRESS state (a waiter that shows events)."""
    deadline = time.monotonic() + timeout_s
    while True:
        tail.poll()
        state = stack_state(cf, stack_id)
        if state is None:  # pragma: no cover - a stack id stays describable after deletion
            return {"StackId": stack_id, "StackStatus": "DELETE_COMPLETE"}
        if not state["StackStatus"].endswith("_IN_PROGRESS"):
            tail.poll()
            return state
        if time.monotonic() > deadline:
            raise UserError(
                f"stack {name} is still {state['StackStatus']} after {timeout_s:.0f} s; follow it in the console"
            )
        time.sleep(poll_s)


def _fail(name: str, action: str, status: str, tail: EventTail) -> UserError:
    reason = f": {tail.failures[0]}" if tail.failures else ""
    return UserError(f"stack {name}: {action} ended in {status}{reason}")


def outputs_of(state: Mapping[str, Any]) -> dict[str, str]:
    return {o["OutputKey"]: o.get("OutputValue", "") for o in state.get("Outputs", [])}


def capabilities(document: Mapping[str, Any]) -> list[CapabilityType]:
    """The acknowledgements the template needs (IAM resources, named ones, macros)."""
    resources = document.get("Resources", {}).values()
    iam = [r for r in resources if str(r.get("Type", "")).startswith("AWS::IAM::")]
    names = ("RoleName", "ManagedPolicyName", "InstanceProfileName", "UserName", "GroupName")
    caps: list[CapabilityType] = ["CAPABILITY_IAM"] if iam else []
    if any(any(n in r.get("Properties", {}) for n in names) for r in iam):
        caps.append("CAPABILITY_NAMED_IAM")
    if "Transform" in document:
        caps.append("CAPABILITY_AUTO_EXPAND")
    return caps


#: Change set statuses while CloudFormation is still computing it.
CHANGE_SET_PENDING = frozenset({"CREATE_PENDING", "CREATE_IN_PROGRESS"})
#: How CloudFormation says a change set would change nothing (its Status is then FAILED).
NO_CHANGES = ("didn't contain changes", NO_UPDATES)


@dataclass(frozen=True)
class Change:
    """One resource change of a change set (describe_change_set's ResourceChange)."""

    action: str  # Add | Modify | Remove | Import | Dynamic
    logical_id: str
    resource_type: str
    replacement: str = ""  # True | False | Conditional ("" when not given: an Add, a Remove, or moto)
    causes: tuple[str, ...] = ()  # the properties whose change requires recreation

    @property
    def risky(self) -> bool:
        """A removal or a replacement (certain or possible): the resource, and what it holds, goes away."""
        return self.action == "Remove" or self.replacement in ("True", "Conditional")

    def describe(self) -> str:
        mark = {"True": "REPLACED", "Conditional": "MAY BE REPLACED"}.get(self.replacement, "")
        if self.action == "Remove":
            mark = "REMOVED"
        causes = f" ({', '.join(self.causes)})" if self.causes and mark and self.action != "Remove" else ""
        line = f"  {self.action:<8} {self.logical_id:<32} {self.resource_type}"
        return f"{line}  {mark}{causes}" if mark else line


def change_from(raw: Mapping[str, Any]) -> Change:
    rc = raw.get("ResourceChange", {})
    causes = []
    for detail in rc.get("Details", []) or []:
        target = detail.get("Target", {})
        if target.get("RequiresRecreation", "Never") != "Never" and target.get("Name"):
            causes.append(str(target["Name"]))
    return Change(str(rc.get("Action", "")), str(rc.get("LogicalResourceId", "")), str(rc.get("ResourceType", "")),
                  str(rc.get("Replacement", "") or ""), tuple(dict.fromkeys(causes)))


def wait_for_change_set(cf: CloudFormationClient, name: str, change_set_id: str, poll_s: float,
                        timeout_s: float) -> tuple[Mapping[str, Any], list[Change]]:  # fmt: skip
    """describe_change_set until CloudFormation has computed it; (the last description, every change)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with aws_errors(f"reading the change set of {name}"):
            desc = cf.describe_change_set(ChangeSetName=change_set_id)
        if desc.get("Status") not in CHANGE_SET_PENDING:
            break
        if time.monotonic() > deadline:
            raise UserError(f"the change set of {name} is still {desc.get('Status')} after {timeout_s:.0f} s")
        time.sleep(poll_s)
    raw = list(desc.get("Changes", []))
    token = desc.get("NextToken")
    while token:
        with aws_errors(f"reading the change set of {name}"):
            page = cf.describe_change_set(ChangeSetName=change_set_id, NextToken=token)
        raw += page.get("Changes", [])
        token = page.get("NextToken")
    return desc, [change_from(c) for c in raw if c.get("Type", "Resource") == "Resource"]


def _discard(cf: CloudFormationClient, name: str, change_set_id: str, created_stack: bool) -> None:
    """Delete a change set that will not run, and the empty stack (REVIEW_IN_PROGRESS) a CREATE one made."""
    with aws_errors(f"deleting the change set of {name}"):
        if created_stack:
            cf.delete_stack(StackName=name)  # deletes its change sets with it
        else:
            cf.delete_change_set(ChangeSetName=change_set_id)


class TemplateSource(TypedDict, total=False):
    TemplateBody: str
    TemplateURL: str


def _template_source(body: str | None, url: str) -> TemplateSource:
    """The template inline (TemplateBody) when it fits, else read from S3 (TemplateURL)."""
    return {"TemplateBody": body} if body is not None else {"TemplateURL": url}


def apply_stack(
    cf: CloudFormationClient,
    name: str,
    state: Mapping[str, Any] | None,
    template_url: str,
    parameters: list[ParameterTypeDef],
    caps: list[CapabilityType],
    say: Echo,
    secrets: tuple[str, ...],
    poll_s: float,
    timeout_s: float,
    *,
    execute: bool = True,
    yes: bool = False,
    confirm: Callable[[str], bool] | None = None,
    template_body: str | None = None,
) -> StackOutcome:
    """Create or update one stack through a change set, as `aws cloudformation deploy` does: create it (CREATE for a
    new stack, UPDATE otherwise), print its changes, ask before any removal or replacement (unless `yes`; without a
    `confirm` callback the answer is no), execute it (unless not `execute`: then only show it and delete it) and wait
    with the stack's events. A change set with no changes is "no updates", a success."""
    action = check_deployable(name, state)
    change_set_type: Literal["CREATE", "UPDATE"] = "CREATE" if action == "create" else "UPDATE"
    change_set_name = f"s3sync-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
    doing = "creating" if action == "create" else "updating"
    say(f"{name}: change set for {doing} ({describe_parameters(parameters, secrets)})")
    from botocore.exceptions import ClientError

    with aws_errors(f"{doing} stack {name} (change set)", secrets):
        try:
            made = cf.create_change_set(
                StackName=name, ChangeSetName=change_set_name, ChangeSetType=change_set_type,
                **_template_source(template_body, template_url),
                Parameters=parameters, Capabilities=caps, Description="s3sync deploy",
            )  # fmt: skip
        except ClientError as exc:
            if state is None or NO_UPDATES not in _message(exc):
                raise
            say(f"{name}: no changes (stays {state['StackStatus']})")
            return StackOutcome(name, state["StackId"], "unchanged", state["StackStatus"], outputs_of(state))
    change_set_id, stack_id = made["Id"], made.get("StackId") or (state or {}).get("StackId", name)
    desc, changes = wait_for_change_set(cf, name, change_set_id, poll_s, timeout_s)
    if desc.get("Status") != "CREATE_COMPLETE":
        reason = str(desc.get("StatusReason") or desc.get("Status"))
        _discard(cf, name, change_set_id, action == "create")
        if action == "update" and state is not None and any(text in reason for text in NO_CHANGES):
            say(f"{name}: no changes (stays {state['StackStatus']})")
            return StackOutcome(name, stack_id, "unchanged", state["StackStatus"], outputs_of(state))
        raise UserError(redact(f"stack {name}: the change set failed: {reason}", secrets))
    say(f"{name}: {len(changes)} change(s):")
    for change in changes:
        say(change.describe())
    risky = [c for c in changes if c.risky]
    if not execute:
        _discard(cf, name, change_set_id, action == "create")
        say(f"{name}: not executed (--no-execute); the change set was deleted")
        return StackOutcome(name, stack_id, "shown", state["StackStatus"] if state else "", outputs_of(state or {}))
    if risky and not yes:
        fate = {"True": "replaced", "Conditional": "may be replaced"}
        what = ", ".join(f"{c.logical_id} ({'removed' if c.action == 'Remove' else fate[c.replacement]})"
                         for c in risky)
        question = f"{name}: {what}: what these resources hold is lost. Execute the change set?"
        if confirm is None or not confirm(question):
            _discard(cf, name, change_set_id, action == "create")
            raise UserError(f"stack {name} not changed: {what} needs a yes (answer y, or pass --yes)")
    tail = EventTail(cf, stack_id, say)  # what happened before (REVIEW_IN_PROGRESS included) is not printed
    with aws_errors(f"executing the change set of {name}", secrets):
        cf.execute_change_set(ChangeSetName=change_set_id)
    final = wait_for_stack(cf, name, stack_id, tail, poll_s, timeout_s)
    if final["StackStatus"] != SUCCESS[action]:
        raise _fail(name, action, final["StackStatus"], tail)
    say(f"{name}: {final['StackStatus']}")
    return StackOutcome(name, stack_id, action, final["StackStatus"], outputs_of(final))


def describe_parameters(parameters: Iterable[Mapping[str, Any]], secrets: tuple[str, ...]) -> str:
    shown = []
    for p in parameters:
        key = p["ParameterKey"]
        if p.get("UsePreviousValue"):
            shown.append(f"{key}=(previous)")
        elif key in SECRET_PARAMETERS:
            shown.append(f"{key}=****")
        else:
            shown.append(f"{key}={p['ParameterValue']}")
    return redact(", ".join(shown) or "no parameters", secrets)


# --- parameters -------------------------------------------------------------------------------------------------------
def check_value(stem: str, name: str, decl: Mapping[str, Any], value: str) -> None:
    """What CloudFormation checks before it starts, checked here first (a clear message, no round trip)."""
    secret = str(decl.get("NoEcho", "")).lower() == "true"
    shown = "the value given" if secret else repr(value)
    where = f"parameter {name} of {stem}.yaml"
    constraint = decl.get("ConstraintDescription")
    allowed = decl.get("AllowedValues")
    if allowed is not None and value not in [str(a) for a in allowed]:
        raise UserError(f"{where}: {shown} is not one of {', '.join(str(a) for a in allowed)}")
    pattern = decl.get("AllowedPattern")
    if pattern is not None:
        try:
            ok = re.fullmatch(pattern, value) is not None
        except re.error:  # a Java-only construct: leave it to CloudFormation
            ok = True
        if not ok:
            raise UserError(f"{where}: {shown} is not {constraint or f'matching {pattern}'}")
    if "MinLength" in decl and len(value) < int(decl["MinLength"]):
        raise UserError(f"{where}: needs at least {decl['MinLength']} character(s)")
    if "MaxLength" in decl and len(value) > int(decl["MaxLength"]):
        raise UserError(f"{where}: at most {decl['MaxLength']} characters")
    if decl.get("Type") == "Number":
        try:
            number = float(value)
        except ValueError:
            raise UserError(f"{where}: {shown} is not a number") from None
        if "MinValue" in decl and number < float(decl["MinValue"]):
            raise UserError(f"{where}: {shown} is below the minimum {decl['MinValue']}")
        if "MaxValue" in decl and number > float(decl["MaxValue"]):
            raise UserError(f"{where}: {shown} is above the maximum {decl['MaxValue']}")


def previous_parameters(cf: CloudFormationClient, state: Mapping[str, Any] | None) -> tuple[set[str], set[str]]:
    """(all, chosen): the existing stack's parameters, and those whose value was chosen rather than defaulted: with
    no default in the template the stack runs now, or a value other than that default (NoEcho ones, shown as ****,
    always count as chosen).

    An update keeps the chosen ones (UsePreviousValue); the others follow the new template's defaults, so that a new
    version's better default reaches a stack that never chose otherwise.
    """
    if state is None:
        return set(), set()
    previous = {p["ParameterKey"]: p.get("ParameterValue") for p in state.get("Parameters", [])}
    defaults: dict[str, str] = {}
    with aws_errors(f"reading the template of stack {state.get('StackName', '')}"):
        body = cf.get_template(StackName=state["StackId"]).get("TemplateBody", {})
    try:
        document = body if isinstance(body, Mapping) else load_template(body)
        for name, decl in (document.get("Parameters") or {}).items():
            if "Default" in decl:
                defaults[name] = str(decl["Default"])
    except Exception:  # noqa: BLE001 - short-form tags or odd templates: keep every previous value
        return set(previous), set(previous)
    chosen = {name for name, value in previous.items() if name not in defaults or str(value) != defaults[name]}
    return set(previous), chosen


def resolve_parameters(
    stem: str,
    stack_name: str,
    declared: Mapping[str, Mapping[str, Any]],
    given: Mapping[str, str],
    previous: AbstractSet[str] = frozenset(),
    chosen: AbstractSet[str] = frozenset(),
    problems: list[str] | None = None,
) -> list[ParameterTypeDef]:
    """The Parameters of create/update_stack. A given value wins; on an update a parameter keeps its previous value
    when it was chosen (see `previous_parameters`) or the new template has no default for it; otherwise the new
    template's default applies. Every parameter still missing and every value CloudFormation would refuse is a
    problem: appended to `problems` when given (to report them all at once), else raised as one line."""
    out: list[ParameterTypeDef] = []
    missing = []
    found: list[str] = []
    for name, decl in declared.items():
        if name in given:
            value = str(given[name])
            try:
                check_value(stem, name, decl, value)
            except UserError as exc:
                found.append(str(exc))
            out.append({"ParameterKey": name, "ParameterValue": value})
        elif name in chosen or (name in previous and "Default" not in decl):
            out.append({"ParameterKey": name, "UsePreviousValue": True})
        elif "Default" not in decl:
            missing.append(f"{name} ({PARAMETER_OPTIONS.get(name, f'--param {name}=...')})")
    if missing:
        found.insert(0, f"stack {stack_name} ({stem}.yaml) needs: {', '.join(missing)}")
    if problems is not None:
        problems.extend(found)
    elif found:
        raise UserError("; ".join(found))
    return out


def effective_values(
    declared: Mapping[str, Mapping[str, Any]], params: list[ParameterTypeDef], state: Mapping[str, Any] | None
) -> dict[str, str]:
    """The value each parameter will have after the operation: given, previous (UsePreviousValue) or default."""
    previous = {p["ParameterKey"]: str(p.get("ParameterValue", "")) for p in (state or {}).get("Parameters", [])}
    out = {name: str(decl["Default"]) for name, decl in declared.items() if "Default" in decl}
    for p in params:
        out[p["ParameterKey"]] = previous.get(p["ParameterKey"], "") if p.get("UsePreviousValue") else str(
            p["ParameterValue"])
    return out


def check_sizes(ecs: Mapping[str, str], lam: Mapping[str, str]) -> None:
    """The worker's sizes as both stacks will have them, checked as ecs.yaml's Rules check them and against the part
    buffers (a check no Rule can make: PartSizeMiB is lambda.yaml's); a one-line error before any stack changes."""

    def number(values: Mapping[str, str], name: str) -> int | None:
        try:
            return int(float(values[name]))
        except (KeyError, ValueError):
            return None

    cpu, memory = number(ecs, "TaskCpu"), number(ecs, "TaskMemory")
    if cpu is None or memory is None:  # a custom ecs.yaml without these parameters
        return
    found = list(sizes.problems(
        launch_type=ecs.get("LaunchType", ""), task_cpu=cpu, task_memory=memory,
        instance_type=ecs.get("InstanceType"), worker_threads=number(ecs, "WorkerThreads"),
        part_size_mib=number(lam, "PartSizeMiB"),
    ))  # fmt: skip
    if found:
        raise UserError("the worker's size cannot work, nothing was changed: " + "; ".join(found))


def check_keys(key_id: str | None, secret_key: str | None) -> None:
    """The China keys look like AWS keys (length first, then characters), or a one-line error that never repeats
    them: a key id of the wrong length is refused for its length, not for its characters."""
    if bool(key_id) != bool(secret_key):
        raise UserError("give both China keys (access key id and secret access key), or neither to keep the previous")
    if not key_id or not secret_key:
        return
    if not 16 <= len(key_id) <= 128:
        raise UserError(f"DestAccessKeyId: the value given has {len(key_id)} character(s); an AWS access key id has "
                        "20 (16 to 128)")
    if not re.fullmatch(r"[A-Z0-9]+", key_id):
        raise UserError("DestAccessKeyId: the value given is not upper-case letters and digits, as AWS access key "
                        "ids are")
    if not 16 <= len(secret_key) <= 128:
        raise UserError(f"DestSecretAccessKey: the value given has {len(secret_key)} character(s); an AWS secret "
                        "access key has 40")
    if not re.fullmatch(r"[A-Za-z0-9/+=]+", secret_key):
        raise UserError("DestSecretAccessKey: the value given is not letters, digits and / + =, as AWS secret access "
                        "keys are")
    if key_id == secret_key:
        raise UserError("DestSecretAccessKey: the value given is the access key id again")


def _say_region(region: str, source: str, say: Echo) -> None:
    say(f"region {region} (from {source})")


def _clients_for(region: str | None, endpoint_url: str | None, profile: str | None,
                 say: Echo) -> tuple[str, Clients]:  # fmt: skip
    """The region, resolved as every command resolves it (and said), and clients for it."""
    chosen, source = resolve_region(region, profile)
    if not chosen:
        raise UserError(NO_REGION)
    check_region(chosen)
    _say_region(chosen, source, say)
    return chosen, client_factory(chosen, endpoint_url, profile)


def function_code_mismatches(clients: Clients, stack_id: str, zip_sha256_hex: str) -> list[str]:
    """The stack's functions whose code is not the zip that was uploaded (Lambda's CodeSha256 is the base64 of the
    zip's SHA-256): the hash check behind an unversioned code bucket, where the key's object could be replaced
    between the upload and Lambda's read."""
    import base64

    expected = base64.b64encode(bytes.fromhex(zip_sha256_hex)).decode()
    cf, lam = clients("cloudformation"), clients("lambda")
    wrong = []
    with aws_errors("checking the functions' code"):
        resources = cf.describe_stack_resources(StackName=stack_id).get("StackResources", [])
        for r in resources:
            if r.get("ResourceType") != "AWS::Lambda::Function" or not r.get("PhysicalResourceId"):
                continue
            sha = lam.get_function(FunctionName=r["PhysicalResourceId"])["Configuration"].get("CodeSha256", "")
            if sha != expected:
                wrong.append(f"{r['LogicalResourceId']} ({sha or 'no hash'})")
    return wrong


# --- deploy / destroy -------------------------------------------------------------------------------------------------
def _check_stack_names(ecs_stack_name: str, lambda_stack_name: str) -> None:
    for name in (ecs_stack_name, lambda_stack_name):
        if not STACK_NAME.fullmatch(name):
            raise UserError(f"invalid stack name {name!r}: a letter, then up to 127 letters, digits or hyphens")
    if ecs_stack_name == lambda_stack_name:
        raise UserError("the ECS and Lambda stacks need different names")


def do_deploy(
    out_dir: Path | str = DEFAULT_OUT,
    *,
    bucket: str,
    prefix: str = "",
    region: str | None = None,
    endpoint_url: str | None = None,
    profile: str | None = None,
    ecs_stack_name: str = DEFAULT_ECS_STACK,
    lambda_stack_name: str = DEFAULT_LAMBDA_STACK,
    parameters: Mapping[str, str] | None = None,
    image_uri: str = "",
    dest_access_key_id: str | None = None,
    dest_secret_access_key: str | None = None,
    echo: Echo = print,
    poll_s: float = DEFAULT_POLL_S,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    clients: Clients | None = None,
    config: StackConfig | None = None,
    builders: Mapping[str, type[StackBuilder]] | None = None,
    execute: bool = True,
    yes: bool = False,
    confirm: Callable[[str], bool] | None = None,
) -> DeployResult:
    """Package and upload, then create or update the ECS stack and then the Lambda stack, each through a change set
    (see `apply_stack`: `execute`, `yes`, `confirm`); print changes, events and outputs."""
    check_keys(dest_access_key_id, dest_secret_access_key)  # first: an implausible key is refused, never masked
    secrets = tuple(s for s in (dest_access_key_id, dest_secret_access_key) if s)

    def say(line: str) -> None:
        echo(redact(line, secrets))

    try:
        return _deploy(
            out_dir, bucket, prefix, region, endpoint_url, profile, ecs_stack_name, lambda_stack_name,
            dict(parameters or {}), image_uri, dest_access_key_id, dest_secret_access_key, say, secrets, poll_s,
            timeout_s, clients, config, builders, execute, yes, confirm,
        )  # fmt: skip
    except UserError as exc:
        raise UserError(redact(str(exc), secrets)) from None


def _deploy(
    out_dir, bucket, prefix, region, endpoint_url, profile, ecs_stack_name, lambda_stack_name, given, image_uri,
    key_id, secret_key, say, secrets, poll_s, timeout_s, clients, config, builders, execute, yes, confirm,
) -> DeployResult:  # fmt: skip
    # 0. what needs no AWS call: names, the keys, --param's names; every bad value is reported at once
    _check_stack_names(ecs_stack_name, lambda_stack_name)
    normalize_prefix(prefix)
    if region is not None:
        check_region(region)
    for key in given:
        if key.rpartition(".")[2] in SECRET_PARAMETERS:
            name = key.rpartition(".")[2]
            raise UserError(f"{name} is a NoEcho parameter: pass it with {SECRET_PARAMETERS[name]}, not --param")
    problems: list[str] = []
    try:
        check_bucket_name(bucket)
    except UserError as exc:
        problems.append(f"--bucket: {exc}")
    documents = _documents(config, builders, bucket, image_uri)
    ecs_given, lambda_given = split_parameters(given, documents)
    if image_uri:
        ecs_given["ImageUri"] = image_uri
    if key_id and secret_key:
        ecs_given["DestAccessKeyId"] = key_id
        ecs_given["DestSecretAccessKey"] = secret_key
    fixed = {"EcsStackName": ecs_stack_name, "CodeBucket": bucket, "CodeKey": _PENDING_KEY}
    if SETTINGS_PARAMETER in documents["lambda"].get("Parameters", {}):
        # always given (an SSM-typed parameter: CloudFormation reads the parameter it names on every update)
        fixed[SETTINGS_PARAMETER] = settings_parameter_name(ecs_stack_name)
    for key, value in fixed.items():
        if key in lambda_given and (lambda_given[key] != value or key == "CodeKey"):
            by_name = key in ("EcsStackName", SETTINGS_PARAMETER)
            source = "--ecs-stack" if by_name else "the package (--bucket, --prefix)"
            raise UserError(f"{key} comes from {source}; do not set it with --param")
    if "CodeVersion" in lambda_given:
        raise UserError("CodeVersion comes from the package (the uploaded zip's version); do not set it with --param")
    lambda_given.update(fixed)

    # 1. the region (said), then the stacks' states: nothing is uploaded for a stack that cannot be updated
    if clients is None:
        region, clients = _clients_for(region, endpoint_url, profile, say)
    else:
        region = region or clients("cloudformation").meta.region_name
        check_region(region)
    cf = clients("cloudformation")
    states = {name: stack_state(cf, name) for name in (ecs_stack_name, lambda_stack_name)}
    for name, state in states.items():
        check_deployable(name, state)

    # 2. parameters of both stacks and the worker's sizes, checked before anything is packaged or uploaded
    plan = []
    values: dict[str, dict[str, str]] = {}
    for stem, name, stack_given in (("ecs", ecs_stack_name, ecs_given), ("lambda", lambda_stack_name, lambda_given)):
        document = documents[stem]
        previous, chosen = previous_parameters(cf, states[name])
        params = resolve_parameters(stem, name, document.get("Parameters", {}), stack_given, previous, chosen,
                                    problems)  # fmt: skip
        values[stem] = effective_values(document.get("Parameters", {}), params, states[name])
        plan.append((stem, name, params, capabilities(document)))
    problems += ssh_problems(values["ecs"])  # ecs.yaml's SSH rule, before anything is packaged
    if problems:
        raise UserError("; ".join(problems) + " (nothing was packaged, uploaded or changed)")
    check_sizes(values["ecs"], values["lambda"])

    # 3. package and upload (every call to the code bucket expects the deployer's account as its owner)
    say(f"packaging into {out_dir} and uploading to s3://{bucket}/{normalize_prefix(prefix)}")
    package = do_package(
        out_dir, bucket=bucket, prefix=prefix, region=region, image_uri=image_uri, ecs_stack_name=ecs_stack_name,
        lambda_stack_name=lambda_stack_name, config=config, builders=builders, clients=clients,
    )  # fmt: skip
    assert package.upload is not None
    up = package.upload
    pinned = f", version {up.code_version}" if up.code_version else ""
    say(f"lambda code: s3://{bucket}/{package.code_key}{pinned} ({package.zip_size} bytes, sha256 "
        f"{package.zip_sha256}); bucket owner checked: account {up.account}")
    code = {"CodeKey": package.code_key}
    if "CodeVersion" in package.documents["lambda"].get("Parameters", {}):
        code["CodeVersion"] = up.code_version  # "" (not versioned) clears a version an earlier deploy pinned
    if not up.code_version:
        say(f"code bucket {bucket} is not versioned: the functions' code is checked by its SHA-256 once the stack "
            "settles (enable versioning on the bucket to pin it instead)")
    lambda_params = plan[1][2]
    lambda_params[:] = [p for p in lambda_params if p["ParameterKey"] not in code]
    lambda_params.extend({"ParameterKey": k, "ParameterValue": v} for k, v in code.items())

    # 4. the ECS stack, then the Lambda stack (it imports the ECS stack's exports and reads its settings parameter);
    # each template inline (TemplateBody) when it fits CloudFormation's limit: nothing read back from the bucket
    outcomes = []
    for stem, name, params, caps in plan:
        if stem == "lambda" and not execute and states[ecs_stack_name] is None:
            say(f"{name}: no change set yet: it imports from {ecs_stack_name}, which does not exist before it is "
                "created")
            continue
        template = f"{stem}.yaml"
        body = inline_body(package.documents[stem])
        outcome = apply_stack(cf, name, states[name], up.template_urls[template], params, caps, say, secrets, poll_s,
                              timeout_s, execute=execute, yes=yes, confirm=confirm, template_body=body)  # fmt: skip
        outcomes.append(outcome)
        if stem == "lambda" and execute and outcome.stack_id:
            wrong = function_code_mismatches(clients, outcome.stack_id, package.zip_sha256)
            if wrong:
                raise UserError(f"stack {name}: the functions do not run the zip that was uploaded (sha256 "
                                f"{package.zip_sha256}): {', '.join(wrong)}; the object at s3://{bucket}/"
                                f"{package.code_key} was replaced after the upload: check who can write the bucket")
    if not execute:
        return DeployResult(package, tuple(outcomes))
    for outcome in outcomes:
        say(f"outputs of {outcome.name}:")
        for key, value in sorted(outcome.outputs.items()):
            say(f"  {key} = {value}")
    return DeployResult(package, tuple(outcomes))


_PENDING_KEY = "pending.zip"  # CodeKey while parameters are checked, before the zip (and so its key) exists


def _documents(config: StackConfig | None, builders: Mapping[str, type[StackBuilder]] | None, bucket: str,
               image_uri: str) -> dict[str, Mapping[str, Any]]:  # fmt: skip
    """Both templates as `package` will render them (the parameters they declare), without writing anything."""
    import dataclasses

    base = config or StackConfig()
    cfg = dataclasses.replace(base, code_key=_PENDING_KEY, image_uri=image_uri or base.image_uri)
    return {name.split(".")[0]: load_template(text) for name, text in render_all(cfg, "yaml", builders).items()}


def do_destroy(
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    profile: str | None = None,
    ecs_stack_name: str = DEFAULT_ECS_STACK,
    lambda_stack_name: str = DEFAULT_LAMBDA_STACK,
    echo: Echo = print,
    poll_s: float = DEFAULT_POLL_S,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    clients: Clients | None = None,
    confirm: Callable[[str], bool] | None = None,
) -> tuple[StackOutcome, ...]:
    """Delete the Lambda stack, then the ECS stack, each waited for with its events; absent stacks are skipped.

    Both stacks are looked at first: `confirm` (when given) is asked only about the stacks that exist and can be
    deleted now, and a no deletes nothing. The source bucket is kept (DeletionPolicy Retain, with its objects); the
    code bucket is not touched.
    """
    _check_stack_names(ecs_stack_name, lambda_stack_name)
    if region is not None:
        check_region(region)
    if clients is None:
        region, clients = _clients_for(region, endpoint_url, profile, echo)
    cf = clients("cloudformation")
    states = {name: stack_state(cf, name) for name in (lambda_stack_name, ecs_stack_name)}
    for name, state in states.items():
        status = state["StackStatus"] if state else ""
        if status.endswith("_IN_PROGRESS") and status not in ("DELETE_IN_PROGRESS", "REVIEW_IN_PROGRESS"):
            raise UserError(f"stack {name} is busy ({status}): wait until it settles, then run this again")
    present = [name for name, state in states.items() if state is not None]
    if present and confirm is not None:
        where = f" in {region}" if region else ""
        if not confirm(f"Delete the stack{'s' if len(present) > 1 else ''} {' and '.join(present)}{where}?"):
            raise UserError("nothing was deleted")
    outcomes = []
    for name, state in states.items():
        if state is None:
            echo(f"{name}: no such stack, nothing to delete")
            outcomes.append(StackOutcome(name, "", "absent", "DELETE_COMPLETE"))
            continue
        status = state["StackStatus"]
        stack_id = state["StackId"]
        tail = EventTail(cf, stack_id, echo)
        if status != "DELETE_IN_PROGRESS":
            echo(f"{name}: deleting")
            with aws_errors(f"deleting stack {name}"):
                cf.delete_stack(StackName=stack_id)
        final = wait_for_stack(cf, name, stack_id, tail, poll_s, timeout_s)
        if final["StackStatus"] != "DELETE_COMPLETE":
            raise _fail(name, "delete", final["StackStatus"], tail)
        echo(f"{name}: DELETE_COMPLETE")
        outcomes.append(StackOutcome(name, stack_id, "delete", "DELETE_COMPLETE"))
    return tuple(outcomes)
