"""The rendered templates as `s3sync package` and `s3sync deploy` handle them: read back, sent inline, and the
parameters the quick-create links and `--parameter` give each stack."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml

from s3sync.errors import UserError
from s3sync.stacks import STACKS

# CloudFormation's limits on a template (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/
# cloudformation-limits.html): 51,200 bytes passed inline (TemplateBody), 1 MB read from S3 (TemplateURL; the
# conservative decimal reading).
INLINE_TEMPLATE_LIMIT = 51_200
S3_TEMPLATE_LIMIT = 1_000_000


def load_template(text: str) -> dict[str, Any]:
    """A rendered template (long-form intrinsics, plain YAML or JSON) as a dict; libyaml's parser when present."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - a safe loader


def inline_body(document: Mapping[str, Any]) -> str | None:
    """The template as compact JSON for TemplateBody, or None when even that is over INLINE_TEMPLATE_LIMIT. The same
    template as the checked-in YAML (CloudFormation reads either format), without indentation or comments: the YAML
    of the Lambda stack is over the inline limit, its JSON is not."""
    body = json.dumps(document, separators=(",", ":"), sort_keys=True)
    return body if len(body.encode("utf-8")) <= INLINE_TEMPLATE_LIMIT else None


def split_parameters(
    given: Mapping[str, str], documents: Mapping[str, Mapping[str, Any]]
) -> tuple[dict[str, str], dict[str, str]]:
    """`Name=value` goes to every stack declaring Name; `ecs.Name` / `lambda.Name` to that stack only."""
    out: dict[str, dict[str, str]] = {stem: {} for stem in STACKS}
    unknown = []
    for key, value in given.items():
        stem, dot, name = key.partition(".")
        if dot:
            if stem not in out:
                raise UserError(f"parameter {key!r}: the stack prefix is one of {', '.join(STACKS)}")
            targets = [stem]
        else:
            name = key
            targets = [s for s in STACKS if name in documents.get(s, {}).get("Parameters", {})]
            if not targets:
                unknown.append(repr(key))
                continue
        for stem in targets:
            if name not in documents.get(stem, {}).get("Parameters", {}):
                raise UserError(f"{stem}.yaml has no parameter {name!r}")
            out[stem][name] = value
    if unknown:
        known = sorted({p for d in documents.values() for p in d.get("Parameters", {})})
        what = "parameter" if len(unknown) == 1 else "parameters"
        raise UserError(f"unknown {what} {', '.join(unknown)}; the templates have {', '.join(known)}")
    return out["ecs"], out["lambda"]


def parse_key_values(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """`KEY=VALUE` strings -> dict (the value may contain '='); a later KEY wins."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise UserError(f"parameter {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out
