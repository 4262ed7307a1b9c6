"""`s3sync package`: the Lambda zip, the worker image build context and both templates, ready to deploy.

    result = do_package("out")                              # build only
    result = do_package("out", bucket="my-code", prefix="s3sync/")  # ... and upload, with template URLs and links

What lands in `out/`:

- `s3sync-functions-<sha256[:16]>.zip`: the `functions` package, the runtime part of `s3sync` (LAMBDA_SOURCES) and
  the pinned SDK (`requirements/runtime.txt`: boto3, botocore and their dependencies, installed at the zip's root,
  where Lambda looks before its own boto3; see s3sync.sdk); nothing else (no templates, local servers, CLI, tests).
  Deterministic: entries sorted, fixed timestamp (1980-01-01), fixed permissions (0644), fixed compression; the
  same sources give the same bytes and so the same SHA-256 and key. The key is content-addressed, so a code change
  is a new CodeKey and a stack update deploys it.
- `worker-image/`: the worker image build context: `container/Dockerfile`, exactly what its COPY lines copy, and
  `wheels/`: the pinned SDK's wheels and the pip that installs them (`requirements/image-build.txt`), so that the
  build needs no package index.
- `ecs.yaml`, `lambda.yaml`: rendered with the code location as parameter defaults (CodeKey, and CodeBucket when
  uploading, ImageUri when given).
- `package.json`: what was built (names, sizes, hashes, the SDK's versions and wheels); no timestamps.

Uploading puts the zip and the templates under `s3://<bucket>/<prefix>`; the bucket must be in the stacks' region
(Lambda reads code from its own region). boto3 is imported only when uploading.

Its parts: `sources` (the source tree), `lambda_zip`, `image_context`, `templates` (read back, inline, parameters);
what talks to AWS is s3sync.aws.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s3sync import contract, sdk
from s3sync.aws import Clients, bucket_region, caller_account, client_factory, upload_file
from s3sync.errors import UserError
from s3sync.package.image_context import (
    DOCKERFILE,
    IMAGE_DIR,
    digest,
    dockerfile_base_image,
    image_files,
    is_ours,
    write_image_context,
)
from s3sync.package.lambda_zip import LAMBDA_UNZIPPED_LIMIT, ZIP_PREFIX, build_zip, lambda_files, sdk_entries
from s3sync.package.sources import source_root
from s3sync.package.templates import S3_TEMPLATE_LIMIT, load_template, split_parameters
from s3sync.render import (
    DEFAULT_ECS_STACK,
    DEFAULT_LAMBDA_STACK,
    QuickCreateLink,
    check_region,
    do_links,
    s3_url,
)
from s3sync.sdk import Wheel
from s3sync.stacks import StackBuilder, StackConfig, render_all

DEFAULT_OUT = Path("out")
MANIFEST = "package.json"

_PREFIX = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*/?")
_BUCKET = re.compile(contract.BUCKET_PATTERN)


@dataclass(frozen=True)
class Upload:
    bucket: str
    prefix: str  # "" or ending in "/"
    region: str
    template_urls: Mapping[str, str]  # "ecs.yaml" -> https URL
    links: tuple[QuickCreateLink, ...]
    account: str = ""  # the deployer's account: the owner every call to the bucket expected
    code_version: str = ""  # the zip's S3 VersionId ("" when the bucket is not versioned)

    @property
    def base_url(self) -> str:
        return s3_url(self.bucket, self.region, self.prefix)


@dataclass(frozen=True)
class PackageResult:
    out_dir: Path
    zip_path: Path
    zip_sha256: str  # hex
    zip_size: int
    code_key: str  # key of the zip in the code bucket (prefix included)
    image_dir: Path
    image_sha256: str  # hex digest over the context's sorted paths and contents
    image_files: tuple[str, ...]
    templates: Mapping[str, Path]  # "ecs.yaml" -> path
    template_sizes: Mapping[str, int]  # bytes
    documents: Mapping[str, Mapping[str, Any]]  # "ecs" -> the template as a dict
    # `Wheel`, not `sdk.Wheel`: in this class `sdk` names the field
    sdk: tuple[Wheel, ...] = ()  # the pinned SDK, in the zip and (as wheels) in the image context
    installer: tuple[Wheel, ...] = ()  # the pip that installs them in the image build
    upload: Upload | None = None

    @property
    def image_tag(self) -> str:
        """A tag that changes with the image's inputs (pass it with the repository as ImageUri)."""
        return self.image_sha256[:12]


# --- output directory ------------------------------------------------------------------------------------------------
def _prepare_out(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir} exists and is not a directory")
    root = source_root()
    resolved = out_dir.resolve()
    if resolved == root or any(resolved == (root / p).resolve() for p in ("s3sync", "functions", "container")):
        raise UserError(f"{out_dir} is a source directory: choose another --out (e.g. out)")
    image = out_dir / IMAGE_DIR
    if image.exists() and not is_ours(image):
        raise UserError(f"{image} exists and was not written by `s3sync package`: remove it or choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)


def normalize_prefix(prefix: str) -> str:
    """"" or `a/b/`: no leading slash, exactly one trailing slash, only characters safe in a URL."""
    p = (prefix or "").strip().lstrip("/")
    if not p:
        return ""
    if not _PREFIX.fullmatch(p) or any(seg in (".", "..") for seg in p.rstrip("/").split("/")):
        raise UserError(f"invalid prefix {prefix!r}: use letters, digits, '.', '_', '-' and '/' (e.g. s3sync/v1/)")
    return p.rstrip("/") + "/"


def check_bucket_name(bucket: str) -> str:
    if not _BUCKET.fullmatch(bucket or "") or ".." in bucket:
        raise UserError(f"invalid bucket name {bucket!r}: 3-63 lower-case letters, digits, dots and hyphens")
    return bucket


# --- package ---------------------------------------------------------------------------------------------------------
def do_package(
    out_dir: Path | str = DEFAULT_OUT,
    *,
    bucket: str | None = None,
    prefix: str = "",
    region: str | None = None,
    image_uri: str = "",
    ecs_stack_name: str = DEFAULT_ECS_STACK,
    lambda_stack_name: str = DEFAULT_LAMBDA_STACK,
    link_parameters: Mapping[str, str] | None = None,
    config: StackConfig | None = None,
    builders: Mapping[str, type[StackBuilder]] | None = None,
    root: Path | None = None,
    clients: Clients | None = None,
    endpoint_url: str | None = None,
    profile: str | None = None,
) -> PackageResult:
    """Build the zip, the image context and the templates in `out_dir`; with `bucket`, upload and make links.

    `region` is where the stacks go (default: the bucket's region, for the links). `link_parameters` pre-fill the
    quick-create links (`Name=value`, or `ecs.Name=value` / `lambda.Name=value` for one stack). `clients` (a
    `service -> boto3 client` factory) replaces the default clients built from `region`, `endpoint_url`, `profile`.
    """
    out = Path(out_dir)
    prefix = normalize_prefix(prefix)
    if bucket is not None:
        check_bucket_name(bucket)
    elif link_parameters or prefix:
        raise UserError("a prefix and link parameters need a bucket: the links point at the uploaded templates")
    if region is not None:
        check_region(region)
    _prepare_out(out)
    root = root or source_root()

    # 1. the Lambda zip: the code and the pinned SDK
    runtime_wheels = sdk.fetch(sdk.read_lock(root / sdk.RUNTIME_LOCK))
    installer_wheels = sdk.fetch(sdk.read_lock(root / sdk.IMAGE_BUILD_LOCK))
    zfiles: list[tuple[str, Path | bytes]] = [*lambda_files(root), *sdk_entries(runtime_wheels)]
    unzipped = sum(len(c) if isinstance(c, bytes) else c.stat().st_size for _, c in zfiles)
    if unzipped > LAMBDA_UNZIPPED_LIMIT:
        raise UserError(f"the functions' code is {unzipped} bytes unzipped; Lambda takes at most 250 MB")
    data = build_zip(zfiles)
    sha = hashlib.sha256(data).hexdigest()
    zip_name = f"{ZIP_PREFIX}{sha[:16]}.zip"
    for old in out.glob(f"{ZIP_PREFIX}*.zip"):
        if old.name != zip_name:
            old.unlink()
    zip_path = out / zip_name
    try:
        zip_path.write_bytes(data)
        # 2. the worker image build context
        ifiles = image_files(root, [*runtime_wheels, *installer_wheels])
        image = out / IMAGE_DIR
        write_image_context(image, ifiles)
    except OSError as exc:
        raise UserError(f"cannot write to {out}: {exc.strerror or exc}") from None
    image_sha = digest(ifiles)

    # 3. the templates, with the code location as parameter defaults
    code_key = f"{prefix}{zip_name}"
    base = config or StackConfig()
    cfg = dataclasses.replace(
        base,
        code_key=code_key,
        code_bucket=bucket or base.code_bucket,
        image_uri=image_uri or base.image_uri,
    )
    texts = render_all(cfg, "yaml", builders)
    templates: dict[str, Path] = {}
    sizes: dict[str, int] = {}
    documents: dict[str, Mapping[str, Any]] = {}
    for name, text in texts.items():
        size = len(text.encode("utf-8"))
        if size > S3_TEMPLATE_LIMIT:
            raise UserError(f"{name} is {size} bytes: CloudFormation reads at most {S3_TEMPLATE_LIMIT} from S3")
        path = out / name
        path.write_text(text, encoding="utf-8")
        templates[name] = path
        sizes[name] = size
        documents[name.split(".")[0]] = load_template(text)

    result = PackageResult(
        out_dir=out,
        zip_path=zip_path,
        zip_sha256=sha,
        zip_size=len(data),
        code_key=code_key,
        image_dir=image,
        image_sha256=image_sha,
        image_files=tuple(name for name, _ in ifiles),
        templates=templates,
        template_sizes=sizes,
        documents=documents,
        sdk=tuple(runtime_wheels),
        installer=tuple(installer_wheels),
    )
    _write_manifest(result, (root / DOCKERFILE).read_text(encoding="utf-8"))
    if bucket is None:
        return result

    # 4. the bucket's region is the stacks' region (the lookup works from any region); every call to the code bucket
    # names the deployer's account as its expected owner (ExpectedBucketOwner): a bucket of that name owned by
    # anyone else (shared, or its name re-registered) is refused by S3 instead of receiving the code, or serving
    # another template or zip to CloudFormation and Lambda
    if clients is None:
        lookup = client_factory(region, endpoint_url, profile, fallback_region="us-east-1")
        owner = caller_account(lookup)
        found = bucket_region(lookup("s3"), bucket, owner)
        clients = client_factory(region or found, endpoint_url, profile)
    else:
        owner = caller_account(clients)
        found = bucket_region(clients("s3"), bucket, owner)
    if region is None:
        region = found
        check_region(region)
    elif found != region:
        raise UserError(
            f"bucket {bucket} is in {found}, but the stacks deploy in {region}: Lambda reads its code from a bucket "
            f"in its own region; use a bucket in {region}"
        )
    # 5. links (checked before anything is uploaded), then the upload
    ecs_params, lambda_params = split_parameters(link_parameters or {}, documents)
    links = do_links(
        s3_url(bucket, region, prefix),
        region,
        ecs_stack_name,
        lambda_stack_name,
        ecs_parameters=ecs_params,
        lambda_parameters=lambda_params,
        documents=documents,
    )
    s3 = clients("s3")
    code_version = upload_file(s3, bucket, code_key, zip_path, "application/zip", owner)
    if code_version and "CodeVersion" in documents["lambda"].get("Parameters", {}):
        # a versioned bucket: the Lambda link launches the zip just uploaded (S3ObjectVersion), not whatever a later
        # PUT leaves at the key; the links were checked above, this adds one known parameter
        lambda_params = {**lambda_params, "CodeVersion": code_version}
        links = do_links(s3_url(bucket, region, prefix), region, ecs_stack_name, lambda_stack_name,
                         ecs_parameters=ecs_params, lambda_parameters=lambda_params, documents=documents)
    for name, path in templates.items():
        upload_file(s3, bucket, f"{prefix}{name}", path, "application/x-yaml", owner)
    upload = Upload(
        bucket=bucket,
        prefix=prefix,
        region=region,
        template_urls={name: s3_url(bucket, region, prefix + name) for name in templates},
        links=tuple(links),
        account=owner,
        code_version=code_version,
    )
    return dataclasses.replace(result, upload=upload)


def _write_manifest(result: PackageResult, dockerfile: str) -> None:
    versions = {w.pin.name: w.pin.version for w in result.sdk}
    manifest = {
        "lambda": {
            "zip": result.zip_path.name,
            "bytes": result.zip_size,
            "sha256": result.zip_sha256,
            "code_key": result.code_key,
            "handlers": sorted(contract.HANDLERS.values()),
            "packages": versions,  # installed at the zip's root
        },
        "image": {
            "context": result.image_dir.name,
            "sha256": result.image_sha256,
            "files": list(result.image_files),
            "base_image": dockerfile_base_image(dockerfile),  # the default of ARG BASE_IMAGE
            "packages": versions,  # installed in /app/lib; nothing else is installed
            "installer": {w.pin.name: w.pin.version for w in result.installer},  # build stage only
        },
        "sdk": {
            "lock": sdk.RUNTIME_LOCK,
            "wheels": {w.pin.name: {"version": w.pin.version, "wheel": w.filename, "sha256": w.pin.sha256}
                       for w in (*result.sdk, *result.installer)},
        },
        "templates": {name: {"bytes": size} for name, size in result.template_sizes.items()},
    }
    (result.out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


__all__ = [
    "DEFAULT_OUT",
    "MANIFEST",
    "PackageResult",
    "Upload",
    "check_bucket_name",
    "do_package",
    "normalize_prefix",
]
