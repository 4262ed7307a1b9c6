"""The rendered templates, resolved against the resources `s3sync local` creates.

`s3sync local` runs the stacks' code with the stacks' own settings: each function gets the Environment.Variables of
its `AWS::Lambda::Function`, each component the policies of its role, both read from the very templates
`s3sync render` writes (built in-process with the local parameters), with every intrinsic function (Ref, Fn::GetAtt,
Fn::Sub, Fn::ImportValue, Fn::If and the conditions, Fn::Select, Fn::Split, Fn::Join, ...) resolved to the names and
ARNs of the local resources. A template change (a variable renamed, an action dropped from a role) therefore shows
locally first, as the design asks of the handler strings.

Resources the runner does not create (log groups, the splitter's dead-letter queue, rules) resolve to names and ARNs
made from the stack name and logical ID, as CloudFormation would name them (without its random suffix).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from s3sync.contract import DEFAULT_ECS_STACK, DEFAULT_LAMBDA_STACK, HANDLERS
from s3sync.errors import UserError
from s3sync.local.iam import PolicyError, Role, Stmt, Where

_NO_VALUE = object()  # Ref AWS::NoValue: the property or list entry disappears
# Properties that name a resource (what `default_physical` reads).
_NAME_PROPERTIES = ("QueueName", "TopicName", "FunctionName", "RoleName", "Path", "ManagedPolicyName", "PolicyName",
                    "LogGroupName", "TableName", "BucketName", "Name", "ClusterName", "ServiceName", "Cluster",
                    "AlarmName")

#: Resource-based policies: their statements apply to every request on the resources they name (a Deny with
#: Principal "*" to everyone; an Allow only where it names the role or the service asking). Type -> the property
#: holding the policy document.
RESOURCE_POLICY_TYPES = {"AWS::S3::BucketPolicy": "PolicyDocument", "AWS::SQS::QueuePolicy": "PolicyDocument",
                         "AWS::SNS::TopicPolicy": "PolicyDocument",
                         "AWS::SecretsManager::ResourcePolicy": "ResourcePolicy"}
#: Policies attached to roles by name (`Roles`), besides a role's inline `Policies`.
ATTACHED_POLICY_TYPES = {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"}

#: Lambda, "Defined runtime environment variables": "The keys for these environment variables are reserved and
#: cannot be set in your function configuration." A template setting one fails to deploy; so it fails here.
LAMBDA_RESERVED = (
    "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME", "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
)


class TemplateError(UserError):
    """A template the local system cannot resolve (or one AWS would refuse)."""


def _url_suffix(partition: str) -> str:
    return "amazonaws.com.cn" if partition == "aws-cn" else "amazonaws.com"


def default_physical(stack: str, logical: str, rtype: str, props: Mapping[str, Any], where: Where) -> dict[str, Any]:
    """What CloudFormation would name a resource the runner did not create: `<stack>-<LogicalId>` (it adds a random
    suffix; ARNs scoped to the resource still match, since both sides are made from the same name)."""
    p, r, a = where.partition, where.region, where.account
    name = f"{stack}-{logical}"
    if rtype == "AWS::SQS::Queue":
        name = str(props.get("QueueName") or name)
        return {"Ref": f"https://sqs.{r}.{_url_suffix(p)}/{a}/{name}", "Arn": f"arn:{p}:sqs:{r}:{a}:{name}",
                "QueueName": name, "QueueUrl": f"https://sqs.{r}.{_url_suffix(p)}/{a}/{name}"}
    if rtype == "AWS::SNS::Topic":
        name = str(props.get("TopicName") or name)
        arn = f"arn:{p}:sns:{r}:{a}:{name}"
        return {"Ref": arn, "TopicArn": arn, "TopicName": name}
    if rtype == "AWS::Lambda::Function":
        name = str(props.get("FunctionName") or name)
        return {"Ref": name, "Arn": f"arn:{p}:lambda:{r}:{a}:function:{name}"}
    if rtype == "AWS::IAM::Role":
        name = str(props.get("RoleName") or name)
        path = str(props.get("Path") or "/")
        return {"Ref": name, "Arn": f"arn:{p}:iam::{a}:role{path}{name}", "RoleId": f"AROA{logical.upper()}"}
    if rtype in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"):
        name = str(props.get("ManagedPolicyName") or props.get("PolicyName") or name)
        return {"Ref": f"arn:{p}:iam::{a}:policy/{name}" if rtype.endswith("ManagedPolicy") else name}
    if rtype == "AWS::Logs::LogGroup":
        name = str(props.get("LogGroupName") or name)
        return {"Ref": name, "Arn": f"arn:{p}:logs:{r}:{a}:log-group:{name}:*"}
    if rtype == "AWS::DynamoDB::Table":
        name = str(props.get("TableName") or name)
        arn = f"arn:{p}:dynamodb:{r}:{a}:table/{name}"
        return {"Ref": name, "Arn": arn, "StreamArn": f"{arn}/stream/local"}
    if rtype == "AWS::S3::Bucket":
        name = str(props.get("BucketName") or name.lower())
        return {"Ref": name, "Arn": f"arn:{p}:s3:::{name}", "DomainName": f"{name}.s3.{_url_suffix(p)}"}
    if rtype == "AWS::SecretsManager::Secret":
        name = str(props.get("Name") or name)
        return {"Ref": f"arn:{p}:secretsmanager:{r}:{a}:secret:{name}-local", "Id": name}
    if rtype == "AWS::ECS::Cluster":
        name = str(props.get("ClusterName") or name)
        return {"Ref": name, "Arn": f"arn:{p}:ecs:{r}:{a}:cluster/{name}"}
    if rtype == "AWS::ECS::Service":
        name = str(props.get("ServiceName") or name)
        cluster = str(props.get("Cluster") or "default").rsplit("/", 1)[-1]
        arn = f"arn:{p}:ecs:{r}:{a}:service/{cluster}/{name}"
        return {"Ref": arn, "ServiceArn": arn, "Name": name}
    if rtype == "AWS::ECS::TaskDefinition":
        return {"Ref": f"arn:{p}:ecs:{r}:{a}:task-definition/{name}:1"}
    if rtype == "AWS::Events::Rule":
        return {"Ref": name, "Arn": f"arn:{p}:events:{r}:{a}:rule/{name}"}
    if rtype == "AWS::CloudWatch::Alarm":
        name = str(props.get("AlarmName") or name)
        return {"Ref": name, "Arn": f"arn:{p}:cloudwatch:{r}:{a}:alarm:{name}"}
    return {"Ref": name, "Arn": f"arn:{p}:cloudformation:{r}:{a}:{rtype.replace('::', '-').lower()}/{name}"}


class Resolver:
    """One stack's template with its parameters: resolves intrinsic functions and conditions."""

    def __init__(self, stack_name: str, template: Mapping[str, Any], parameters: Mapping[str, Any], where: Where,
                 physical: Mapping[str, Mapping[str, Any]] | None = None,
                 exports: Mapping[str, Any] | None = None, ssm: Mapping[str, Any] | None = None) -> None:
        self.stack_name = stack_name
        self.template = template
        self.where = where
        self.resources: Mapping[str, Mapping[str, Any]] = template.get("Resources", {})
        self.physical = dict(physical or {})
        self.exports = dict(exports or {})
        self.parameters: dict[str, Any] = {}
        for name, spec in template.get("Parameters", {}).items():
            if name in parameters:
                value: Any = parameters[name]
            elif "Default" in spec:
                value = spec["Default"]
            else:  # a deploy-time value the local system has no use for (VpcId, CodeBucket, ...)
                value = f"local-{name}"
            if str(spec.get("Type", "")).startswith("AWS::SSM::Parameter::Value<"):
                # the value of the SSM parameter it names, when a stack here writes it (AWS::SSM::Parameter);
                # others (AWS's public ones: the ECS-optimized AMI) have no local value
                value = (ssm or {}).get(str(value), f"local-{name}")
            if str(spec.get("Type", "")).startswith("List<") or spec.get("Type") == "CommaDelimitedList":
                value = value if isinstance(value, list) else [v.strip() for v in str(value).split(",") if v.strip()]
            else:
                value = str(value).lower() if isinstance(value, bool) else str(value)
            self.parameters[name] = value
        self._conditions: dict[str, bool] = {}
        self._defaults: dict[str, dict[str, Any]] = {}

    # -- conditions --
    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            spec = self.template.get("Conditions", {}).get(name)
            if spec is None:
                raise TemplateError(f"{self.stack_name}: unknown condition {name!r}")
            self._conditions[name] = bool(self._condition_value(spec))
        return self._conditions[name]

    def _condition_value(self, node: Any) -> bool:
        if isinstance(node, Mapping) and len(node) == 1:
            (fn, arg), = node.items()
            if fn == "Condition":
                return self.condition(arg)
            if fn == "Fn::Equals":
                a, b = (self.resolve(x) for x in arg)
                return str(a) == str(b)
            if fn == "Fn::Not":
                return not self._condition_value(arg[0])
            if fn == "Fn::And":
                return all(self._condition_value(x) for x in arg)
            if fn == "Fn::Or":
                return any(self._condition_value(x) for x in arg)
        raise TemplateError(f"{self.stack_name}: not a condition: {node!r}")

    def enabled(self, logical: str) -> bool:
        """A resource exists only when its Condition (if any) holds."""
        cond = self.resources.get(logical, {}).get("Condition")
        return True if cond is None else self.condition(cond)

    # -- references --
    def _attributes(self, logical: str) -> dict[str, Any]:
        if logical not in self.resources:
            raise TemplateError(f"{self.stack_name}: no resource {logical!r}")
        if not self.enabled(logical):
            raise TemplateError(f"{self.stack_name}: {logical} is referenced but its condition is false")
        if logical not in self._defaults:
            res = self.resources[logical]
            raw = res.get("Properties", {})  # only the naming properties: others may refer to anything
            props = {k: self.resolve(raw[k]) for k in _NAME_PROPERTIES if k in raw}
            self._defaults[logical] = default_physical(self.stack_name, logical, res["Type"], props, self.where)
        return {**self._defaults[logical], **self.physical.get(logical, {})}

    def ref(self, name: str) -> Any:
        pseudo = {"AWS::Region": self.where.region, "AWS::AccountId": self.where.account,
                  "AWS::Partition": self.where.partition, "AWS::StackName": self.stack_name,
                  "AWS::URLSuffix": _url_suffix(self.where.partition), "AWS::NotificationARNs": [],
                  "AWS::StackId": f"arn:{self.where.partition}:cloudformation:{self.where.region}:"
                                  f"{self.where.account}:stack/{self.stack_name}/local"}
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        return self._attributes(name)["Ref"]

    def get_att(self, logical: str, attribute: str) -> Any:
        attrs = self._attributes(logical)
        if attribute not in attrs:
            raise TemplateError(f"{self.stack_name}: {logical}.{attribute} is not known locally "
                                f"(known: {', '.join(sorted(attrs))})")
        return attrs[attribute]

    def _sub(self, text: str, variables: Mapping[str, Any]) -> str:
        def one(m: re.Match[str]) -> str:
            inner = m.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"
            if inner in variables:
                return str(variables[inner])
            if "." in inner and not inner.startswith("AWS::"):
                logical, attribute = inner.split(".", 1)
                return str(self.get_att(logical, attribute))
            return str(self.ref(inner))
        return re.sub(r"\$\{([^}]+)\}", one, text)

    def resolve(self, node: Any) -> Any:
        """The value of a template fragment with every intrinsic function applied."""
        if isinstance(node, list):
            return [v for v in (self.resolve(x) for x in node) if v is not _NO_VALUE]
        if not isinstance(node, Mapping):
            return node
        if len(node) == 1:
            (fn, arg), = node.items()
            if fn == "Ref":
                return self.ref(arg)
            if fn == "Fn::GetAtt":
                logical, attribute = arg if isinstance(arg, list) else str(arg).split(".", 1)
                return self.get_att(logical, self.resolve(attribute))
            if fn == "Fn::Sub":
                if isinstance(arg, list):
                    text, variables = arg[0], {k: self.resolve(v) for k, v in arg[1].items()}
                else:
                    text, variables = arg, {}
                return self._sub(text, variables)
            if fn == "Fn::Join":
                sep, items = arg
                return str(sep).join(str(x) for x in self.resolve(items))
            if fn == "Fn::Select":
                index, items = arg
                return self.resolve(items)[int(self.resolve(index))]
            if fn == "Fn::Split":
                sep, text = arg
                return str(self.resolve(text)).split(str(sep))
            if fn == "Fn::If":
                cond, yes, no = arg
                return self.resolve(yes if self.condition(cond) else no)
            if fn == "Fn::ImportValue":
                name = str(self.resolve(arg))
                if name not in self.exports:
                    raise TemplateError(f"{self.stack_name} imports {name!r}, which no stack exports")
                return self.exports[name]
            if fn == "Fn::FindInMap":
                m, k1, k2 = (self.resolve(x) for x in arg)
                return self.template["Mappings"][m][k1][k2]
            if fn == "Fn::Base64":
                return base64.b64encode(str(self.resolve(arg)).encode()).decode()
            if fn == "Fn::GetAZs":
                return [f"{self.where.region}{z}" for z in "abc"]
            if fn == "Fn::ToJsonString":
                return json.dumps(self.resolve(arg), separators=(",", ":"))
            if fn == "Condition":
                return self.condition(arg)
            if fn.startswith("Fn::"):
                raise TemplateError(f"{self.stack_name}: intrinsic function {fn} is not modelled locally")
        out = {}
        for k, v in node.items():
            value = self.resolve(v)
            if value is not _NO_VALUE:
                out[k] = value
        return out

    def exported(self) -> dict[str, Any]:
        """Export name -> value, for the stacks that import them."""
        out = {}
        for output in self.template.get("Outputs", {}).values():
            if "Export" not in output or ("Condition" in output and not self.condition(output["Condition"])):
                continue
            out[str(self.resolve(output["Export"]["Name"]))] = self.resolve(output["Value"])
        return out

    def ssm_parameters(self) -> dict[str, Any]:
        """Name -> value of the SSM parameters this stack writes (read by SSM-typed parameters of another)."""
        out = {}
        for logical in self.of_type("AWS::SSM::Parameter"):
            raw = self.resources[logical]["Properties"]
            out[str(self.resolve(raw["Name"]))] = self.resolve(raw["Value"])
        return out

    def of_type(self, *types: str) -> list[str]:
        return [k for k, v in self.resources.items() if v.get("Type") in types and self.enabled(k)]


@dataclass(frozen=True)
class FunctionSpec:
    """One Lambda function as the template declares it, resolved."""

    key: str  # contract.HANDLERS key: "splitter"
    logical_id: str
    name: str
    handler: str
    runtime: str
    memory_mib: int
    timeout_s: int
    log_group: str
    environment: Mapping[str, str]
    role_logical_id: str


@dataclass(frozen=True)
class TaskSpec:
    """The worker container of the task definition, resolved: its environment and where its secrets come from."""

    environment: Mapping[str, str]
    secrets: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # name -> (secret ARN, JSON key or "")
    command: tuple[str, ...] = ()
    task_role_logical_id: str = ""
    execution_role_logical_id: str = ""


def _role_of(value: Any, what: str) -> str:
    """The logical ID behind `Fn::GetAtt [X, Arn]` (how both templates name a role)."""
    if isinstance(value, Mapping) and "Fn::GetAtt" in value:
        arg = value["Fn::GetAtt"]
        return str(arg[0] if isinstance(arg, list) else str(arg).split(".", 1)[0])
    raise TemplateError(f"{what}: role given as {value!r}; expected Fn::GetAtt [<Role>, Arn]")


class LocalStacks:
    """Both stacks resolved against the local resources: functions, task, roles."""

    def __init__(self, templates: Mapping[str, Mapping[str, Any]], parameters: Mapping[str, Any], where: Where,
                 physical: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
                 stack_names: Mapping[str, str] | None = None) -> None:
        names = {"ecs": DEFAULT_ECS_STACK, "lambda": DEFAULT_LAMBDA_STACK, **(stack_names or {})}
        physical = physical or {}
        self.where = where
        params = {"EcsStackName": names["ecs"], **parameters}
        self.ecs = Resolver(names["ecs"], templates["ecs"], params, where, physical.get("ecs"))
        self.lambda_ = Resolver(names["lambda"], templates["lambda"], params, where, physical.get("lambda"),
                                exports=self.ecs.exported(), ssm=self.ecs.ssm_parameters())
        self.stacks = {"ecs": self.ecs, "lambda": self.lambda_}

    # -- functions --
    def function(self, key: str) -> FunctionSpec:
        """The function whose Handler is `contract.HANDLERS[key]` (the runner invokes exactly that handler)."""
        handler = HANDLERS[key]
        r = self.lambda_
        for logical in r.of_type("AWS::Lambda::Function"):
            raw = r.resources[logical]["Properties"]
            if raw.get("Handler") != handler:
                continue
            props = r.resolve(raw)
            env = {str(k): str(v) for k, v in ((props.get("Environment") or {}).get("Variables") or {}).items()}
            reserved = sorted(set(env) & set(LAMBDA_RESERVED))
            if reserved:
                raise TemplateError(f"function {logical} sets reserved Lambda variables {reserved}: Lambda refuses "
                                    f"them (Defined runtime environment variables)")
            log_group = str(((props.get("LoggingConfig") or {}).get("LogGroup"))
                            or f"/aws/lambda/{r.ref(logical)}")
            return FunctionSpec(key, logical, str(r.ref(logical)), handler, str(props.get("Runtime", "")),
                                int(props.get("MemorySize", 128)), int(props.get("Timeout", 3)), log_group, env,
                                _role_of(raw.get("Role"), f"function {logical}"))
        raise TemplateError(f"no AWS::Lambda::Function in lambda.yaml has Handler {handler!r}")

    # -- the worker task --
    def task(self) -> TaskSpec:
        r = self.ecs
        defs = r.of_type("AWS::ECS::TaskDefinition")
        if len(defs) != 1:
            raise TemplateError(f"ecs.yaml has {len(defs)} task definitions; expected one")
        raw = r.resources[defs[0]]["Properties"]
        props = r.resolve(raw)
        container = props["ContainerDefinitions"][0]
        env = {str(e["Name"]): str(e.get("Value", "")) for e in container.get("Environment", [])}
        secrets = {}
        for s in container.get("Secrets", []):
            # ValueFrom: the secret's ARN, optionally followed by :json-key:version-stage:version-id
            fields = str(s["ValueFrom"]).split(":")
            secrets[str(s["Name"])] = (":".join(fields[:7]), fields[7] if len(fields) > 7 else "")
        return TaskSpec(env, secrets, tuple(str(c) for c in container.get("Command", [])),
                        _role_of(raw.get("TaskRoleArn"), "task definition"),
                        _role_of(raw.get("ExecutionRoleArn"), "task definition"))

    # -- roles --
    def role(self, stack: str, logical: str, session: str = "local") -> Role:
        """Everything that applies to requests made with this role: its inline policies, the policies attached to
        it by name (in either stack), and the resource-based policies of both stacks."""
        r = self.stacks[stack]
        res = r.resources.get(logical, {})
        if res.get("Type") != "AWS::IAM::Role" or not r.enabled(logical):
            raise TemplateError(f"{stack} stack has no role {logical}")
        props = r.resolve(res.get("Properties", {}))
        if props.get("ManagedPolicyArns"):
            raise PolicyError(f"role {logical} attaches managed policies {props['ManagedPolicyArns']}: their "
                              f"statements are not in the templates, so the local system cannot check them")
        role_name = str(r.ref(logical))
        label = f"{logical} ({stack}.yaml)"
        statements: list[Stmt] = []

        def add(source: str, document: Mapping[str, Any], resource_based: bool = False) -> None:
            for i, st in enumerate(_as_list(document.get("Statement", [])), 1):
                statements.append(Stmt(f"{source} #{i}", st, resource_based))

        for policy in props.get("Policies", []):
            add(f"{logical}/{policy.get('PolicyName', 'inline')}", policy["PolicyDocument"])
        for name, other in self.stacks.items():
            for pl in other.of_type(*ATTACHED_POLICY_TYPES):
                pprops = other.resolve(other.resources[pl]["Properties"])
                if role_name in [str(x) for x in pprops.get("Roles", [])]:
                    add(f"{pl} ({name}.yaml)", pprops["PolicyDocument"])
        statements += self.resource_statements()
        return Role(label, str(r.get_att(logical, "Arn")), tuple(statements), session)

    def resource_statements(self) -> list[Stmt]:
        """The statements of every resource-based policy of both stacks (they apply to every principal's requests,
        a role's or a service's, as far as their Principal and Resource say)."""
        out: list[Stmt] = []
        for name, other in self.stacks.items():
            for pl in other.of_type(*RESOURCE_POLICY_TYPES):
                rtype = other.resources[pl]["Type"]
                pprops = other.resolve(other.resources[pl]["Properties"])
                document = pprops[RESOURCE_POLICY_TYPES[rtype]]
                if isinstance(document, str):  # a Json property may be given as text
                    document = json.loads(document)
                for i, st in enumerate(_as_list(document.get("Statement", [])), 1):
                    if rtype == "AWS::SecretsManager::ResourcePolicy":
                        # "In a policy attached to a secret, * means the policy applies to this secret" (Secrets
                        # Manager user guide): the statement is scoped to the secret the policy is attached to
                        st = {**st, "Resource": [str(pprops["SecretId"]) if str(x) == "*" else x
                                                 for x in _as_list(st.get("Resource", []))]}
                    out.append(Stmt(f"{pl} ({name}.yaml, resource-based) #{i}", st, True))
        return out

    def function_role(self, key: str) -> Role:
        fn = self.function(key)
        return self.role("lambda", fn.role_logical_id, session=fn.name)

    def task_role(self) -> Role:
        return self.role("ecs", self.task().task_role_logical_id, session="worker")

    def execution_role(self) -> Role:
        return self.role("ecs", self.task().execution_role_logical_id, session="ecs-agent")


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def lambda_runtime_environment(fn: FunctionSpec, region: str, credentials: tuple[str, str, str],
                               task_root: str) -> dict[str, str]:
    """What the Lambda runtime sets in a function's environment (Lambda, "Defined runtime environment variables"):
    the reserved variables (handler, region, function name/memory/version, log group and stream, the execution
    role's credentials, code and runtime paths) and the unreserved defaults (LANG, PATH, LD_LIBRARY_PATH,
    PYTHONPATH, TZ). Locally the credentials are the control plane's dummy keys."""
    key_id, secret, token = credentials
    version = fn.runtime.removeprefix("python")
    return {
        "_HANDLER": fn.handler,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{fn.runtime}",
        "AWS_LAMBDA_FUNCTION_NAME": fn.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_mib),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": fn.log_group,
        "AWS_LAMBDA_LOG_STREAM_NAME": "local/[$LATEST]0",
        "AWS_ACCESS_KEY_ID": key_id,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_SESSION_TOKEN": token,
        "LAMBDA_TASK_ROOT": task_root,
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "TZ": ":UTC",
        "LANG": "en_US.UTF-8",
        "PATH": "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin",
        "LD_LIBRARY_PATH": f"/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:{task_root}:"
                           f"{task_root}/lib:/opt/lib",
        "PYTHONPATH": f"/var/runtime:/opt/python/lib/python{version}/site-packages:/opt/python",
    }


__all__ = ["FunctionSpec", "LAMBDA_RESERVED", "LocalStacks", "Resolver", "TaskSpec", "TemplateError",
           "default_physical", "lambda_runtime_environment"]
