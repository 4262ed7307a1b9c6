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
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import stat
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from s3sync import contract, sdk
from s3sync.errors import UserError
from s3sync.render import (
    DEFAULT_ECS_STACK,
    DEFAULT_LAMBDA_STACK,
    QuickCreateLink,
    check_region,
    do_links,
    s3_url,
)
from s3sync.sdk import Wheel
from s3sync.stacks import STACKS, StackBuilder, StackConfig, render_all

DEFAULT_OUT = Path("out")

#: What the Lambda zip carries, relative to the source root: the handlers and the runtime code they import.
LAMBDA_SOURCES: tuple[str, ...] = (
    "functions",
    "s3sync/__init__.py",
    "s3sync/contract.py",
    "s3sync/errors.py",
    "s3sync/transfer",
)
DOCKERFILE = "container/Dockerfile"
WHEELS_DIR = "wheels"  # in the image build context: written by `package`, not copied from the sources
ZIP_PREFIX = "s3sync-functions-"
IMAGE_DIR = "worker-image"
MANIFEST = "package.json"
# The image context's .dockerignore starts with this line: it marks a directory this module wrote (and may replace).
_MARKER = "# Written by `s3sync package`"

ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can carry
ZIP_FILE_MODE = 0o644
ZIP_COMPRESSLEVEL = 9
FIXED_MTIME = 315532800  # 1980-01-01T00:00:00Z, for the files of the image build context

# CloudFormation's limits on a template (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/
# cloudformation-limits.html): 51,200 bytes passed inline (TemplateBody), 1 MB read from S3 (TemplateURL; the
# conservative decimal reading). Lambda: 250 MB unzipped for a package read from S3.
INLINE_TEMPLATE_LIMIT = 51_200
S3_TEMPLATE_LIMIT = 1_000_000
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024

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


# --- sources ---------------------------------------------------------------------------------------------------------
def source_root() -> Path:
    """The directory holding the `s3sync`, `functions` and `container` packages (the repository in a checkout)."""
    import s3sync

    return Path(s3sync.__file__).resolve().parent.parent


def _skip(path: Path) -> bool:
    return (
        "__pycache__" in path.parts
        or path.suffix in (".pyc", ".pyo")
        or any(p.startswith(".") for p in path.parts)
        or path.name.endswith("~")
    )


def _files(root: Path, relative: str) -> Iterator[tuple[str, Path]]:
    """(posix path relative to root, file) for `relative` (a file or a directory, walked), skipping caches."""
    path = root / relative
    if path.is_file():
        yield Path(relative).as_posix(), path
    elif path.is_dir():
        for p in sorted(path.rglob("*")):
            rel = p.relative_to(root)
            if p.is_file() and not _skip(rel):
                yield rel.as_posix(), p
    else:
        raise UserError(f"{path} is missing: package from a source checkout of s3sync (pip install -e .)")


def lambda_files(root: Path | None = None) -> list[tuple[str, Path]]:
    """The files of the Lambda zip, sorted by their name in the zip."""
    root = root or source_root()
    files = {name: path for rel in LAMBDA_SOURCES for name, path in _files(root, rel)}
    return sorted(files.items())


def sdk_entries(wheels: list[sdk.Wheel]) -> list[tuple[str, bytes]]:
    """The installed files of the SDK's wheels (site-packages layout), for the zip's root."""
    entries: dict[str, bytes] = {}
    for wheel in wheels:
        for name, data in sdk.install_entries(wheel):
            if name in entries:
                raise UserError(f"{wheel.filename}: {name} is in two wheels")
            entries[name] = data
    return sorted(entries.items())


def build_zip(files: list[tuple[str, Path | bytes]]) -> bytes:
    """A deterministic zip of (name, file or bytes): sorted, fixed time and mode, deflated at a fixed level."""
    names = [name for name, _ in files]
    if len(set(names)) != len(names):
        raise UserError("two zip entries with the same name: " + ", ".join(sorted({n for n in names
                                                                                     if names.count(n) > 1})))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in sorted(files, key=lambda f: f[0]):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
            info.create_system = 3  # unix, so that external_attr carries the mode on every platform
            info.external_attr = (stat.S_IFREG | ZIP_FILE_MODE) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            data = content if isinstance(content, bytes) else content.read_bytes()
            zf.writestr(info, data, compresslevel=ZIP_COMPRESSLEVEL)
    return buf.getvalue()


def dockerfile_sources(text: str) -> list[str]:
    """Source paths of the COPY/ADD instructions of a Dockerfile (not `--from=` stages), in order."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    if current:
        logical.append(current)
    sources: list[str] = []
    for line in logical:
        instruction, _, rest = line.partition(" ")
        if instruction.upper() not in ("COPY", "ADD"):
            continue
        rest = rest.strip()
        if rest.startswith("["):
            args = json.loads(rest)
        else:
            args = shlex.split(rest)
        flags = [a for a in args if a.startswith("--")]
        if any(f.startswith("--from") for f in flags):
            continue
        paths = [a for a in args if not a.startswith("--")]
        if len(paths) < 2:
            raise UserError(f"cannot read the Dockerfile instruction {line!r}")
        for src in paths[:-1]:
            if any(ch in src for ch in "*?[") or src.startswith(("http://", "https://", "/")) or ".." in src:
                raise UserError(f"Dockerfile source {src!r}: only plain paths inside the context are packaged")
            sources.append(src.rstrip("/") or ".")
    return sources


def image_files(root: Path | None = None, wheels: list[sdk.Wheel] | None = None) -> list[tuple[str, Path]]:
    """container/Dockerfile, every file its COPY lines copy and the wheels, sorted by path in the build context."""
    root = root or source_root()
    dockerfile = root / DOCKERFILE
    if not dockerfile.is_file():
        raise UserError(f"{dockerfile} is missing: package from a source checkout of s3sync (pip install -e .)")
    files = {DOCKERFILE: dockerfile}
    for src in dockerfile_sources(dockerfile.read_text(encoding="utf-8")):
        if src != WHEELS_DIR:
            files.update(_files(root, src))
    for wheel in wheels or ():
        files[f"{WHEELS_DIR}/{wheel.filename}"] = wheel.path
    return sorted(files.items())


def dockerfile_env(text: str) -> dict[str, str]:
    """The variables of a Dockerfile's `ENV k=v ...` lines (the form used here; not `ENV k v`)."""
    env: dict[str, str] = {}
    joined = re.sub(r"\\\n", " ", text)
    for line in joined.splitlines():
        instruction, _, rest = line.strip().partition(" ")
        if instruction.upper() == "ENV":
            for word in shlex.split(rest):
                key, eq, value = word.partition("=")
                if not eq:
                    raise UserError(f"Dockerfile: write ENV as key=value: {line.strip()!r}")
                env[key] = value
    return env


def dockerfile_base_image(text: str) -> str:
    """The default of the Dockerfile's `ARG BASE_IMAGE=...`."""
    m = re.search(r"^ARG\s+BASE_IMAGE=(\S+)", text, re.MULTILINE)
    if not m:
        raise UserError("container/Dockerfile has no `ARG BASE_IMAGE=<default>`")
    return m.group(1)


def _digest(files: list[tuple[str, Path]]) -> str:
    h = hashlib.sha256()
    for name, path in sorted(files):
        data = path.read_bytes()
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


# --- output directory ------------------------------------------------------------------------------------------------
def _prepare_out(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir} exists and is not a directory")
    root = source_root()
    resolved = out_dir.resolve()
    if resolved == root or any(resolved == (root / p).resolve() for p in ("s3sync", "functions", "container")):
        raise UserError(f"{out_dir} is a source directory: choose another --out (e.g. out)")
    image = out_dir / IMAGE_DIR
    if image.exists() and not _is_ours(image):
        raise UserError(f"{image} exists and was not written by `s3sync package`: remove it or choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)


def _is_ours(image: Path) -> bool:
    try:
        return (image / ".dockerignore").read_text(encoding="utf-8").startswith(_MARKER)
    except OSError:
        return False


def _write_image_context(image: Path, files: list[tuple[str, Path]]) -> None:
    if image.exists():
        shutil.rmtree(image)
    image.mkdir(parents=True)
    for name, path in files:
        target = image / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        target.chmod(ZIP_FILE_MODE)
    (image / ".dockerignore").write_text(
        f"{_MARKER} (replaced on every run): the context holds only what container/Dockerfile copies.\n"
        ".dockerignore\n",
        encoding="utf-8",
    )
    # Fixed times and modes: the same sources give the same context.
    for p in sorted(image.rglob("*"), reverse=True):
        os.utime(p, (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)


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
    clients: Callable[[str], Any] | None = None,
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
        _write_image_context(image, ifiles)
    except OSError as exc:
        raise UserError(f"cannot write to {out}: {exc.strerror or exc}") from None
    image_sha = _digest(ifiles)

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


def load_template(text: str) -> dict[str, Any]:
    """A rendered template (long-form intrinsics, plain YAML or JSON) as a dict; libyaml's parser when present."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - a safe loader


def inline_body(document: Mapping[str, Any]) -> str | None:
    """The template as compact JSON for TemplateBody, or None when even that is over INLINE_TEMPLATE_LIMIT. The same
    template as the checked-in YAML (CloudFormation reads either format), without indentation or comments: the YAML
    of the Lambda stack is over the inline limit, its JSON is not."""
    body = json.dumps(document, separators=(",", ":"), sort_keys=True)
    return body if len(body.encode("utf-8")) <= INLINE_TEMPLATE_LIMIT else None


# --- AWS (boto3 is imported here only, when something is uploaded or deployed) ---------------------------------------
REGION_SOURCES = ("--region", "AWS_REGION", "AWS_DEFAULT_REGION", "the profile")


def resolve_region(region: str | None, profile: str | None = None) -> tuple[str | None, str]:
    """(region, where it came from), in the order every command uses: the option, AWS_REGION, AWS_DEFAULT_REGION,
    then the profile's `region` (boto3's own session reads only the last two, not AWS_REGION, which the AWS CLI v2
    and the SDKs for other languages read). (None, "") when none is set."""
    if region:
        return region, "--region"
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if os.environ.get(var, "").strip():
            return os.environ[var].strip(), var
    try:
        import botocore.session
        from botocore.exceptions import BotoCoreError

        session = botocore.session.Session(profile=profile)
        found = session.get_scoped_config().get("region")
    except ImportError:  # pragma: no cover - botocore is a dependency
        return None, ""
    except BotoCoreError as exc:
        raise UserError(f"AWS profile {profile!r}: {exc}") from None
    if found:
        return found, f"profile {profile or session.profile or 'default'}"
    return None, ""


NO_REGION = "no AWS region: pass --region, or set AWS_REGION (or AWS_DEFAULT_REGION, or region in the profile)"


def client_factory(
    region: str | None,
    endpoint_url: str | None = None,
    profile: str | None = None,
    *,
    fallback_region: str | None = None,
) -> Callable[[str], Any]:
    """`service -> client` for one region (default: `resolve_region`'s, then `fallback_region`), with an optional
    endpoint (e.g. a local moto server) and profile."""
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError
    except ImportError:  # pragma: no cover - boto3 is a dependency
        raise UserError("boto3 is needed to upload and deploy: pip install boto3") from None
    try:
        session = boto3.session.Session(profile_name=profile) if profile else boto3.session.Session()
    except BotoCoreError as exc:
        raise UserError(f"AWS profile {profile!r}: {exc}") from None
    config = Config(retries={"max_attempts": 5, "mode": "standard"}, user_agent_extra="s3sync")
    cache: dict[str, Any] = {}

    def client(service: str) -> Any:
        if service not in cache:
            chosen = resolve_region(region, profile)[0] or fallback_region
            if not chosen:
                raise UserError(NO_REGION)
            cache[service] = session.client(service, region_name=chosen, endpoint_url=endpoint_url, config=config)
        return cache[service]

    return client


def caller_account(clients: Callable[[str], Any]) -> str:
    """The deployer's account (STS GetCallerIdentity): the owner every call to the code bucket expects."""
    with aws_errors("reading the caller's account (sts get-caller-identity)"):
        account = str(clients("sts").get_caller_identity()["Account"])
    if not re.fullmatch(r"\d{12}", account):
        raise UserError(f"sts get-caller-identity answered account {account!r}, not a 12-digit account id")
    return account


#: What an endpoint that does not speak the API was expected to be (--endpoint-url is the usual cause).
_NOT_AWS = ("expected an AWS API there (AWS itself, or the control plane of `s3sync local`, a moto server, for "
            "--endpoint-url); is --endpoint-url the right address?")


class aws_errors:  # noqa: N801 - used as a context manager: `with aws_errors("uploading x"):`
    """Turns boto errors into one-line UserErrors: `<doing>: <code>: <message>`, with `redact` strings masked."""

    def __init__(self, doing: str, redact: tuple[str, ...] = ()) -> None:
        self.doing = doing
        self.redact = redact

    def __enter__(self) -> aws_errors:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Literal[False]:  # never swallows one
        if exc is None:
            return False
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", "error"))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code.isdigit() or not code:  # no AWS error in the body: not the API we expected answered
                text = (f"{self.doing}: the endpoint answered HTTP {status or code} to {exc.operation_name} without "
                        f"an AWS error: {_NOT_AWS}")
            else:
                message = (str(err.get("Message") or exc).strip().splitlines() or [""])[0][:300]
                text = f"{self.doing}: {code}: {message}"
        elif type(exc).__name__ == "ResponseParserError":
            text = f"{self.doing}: the endpoint answered something that is not an AWS API response: {_NOT_AWS}"
        elif type(exc).__module__.split(".")[0] in ("botocore", "boto3", "urllib3"):
            # BotoCoreError (no credentials, endpoint unreachable, ...) and the like: the first line is the message.
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            text = f"{self.doing}: {first[:300]}"
        else:
            return False
        raise UserError(redact(text, self.redact)) from None


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """`text` with every whole occurrence of a secret replaced by ****: one not inside a longer run of the
    characters keys are made of (letters, digits, / + =), so that a short value neither garbles the text nor shows
    where it occurs in other words."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        # "=" ends a value (padding) but may stand before one (KEY=value)
        text = re.sub(rf"(?<![A-Za-z0-9/+]){re.escape(secret)}(?![A-Za-z0-9/+=])", "****", text)
    return text


def bucket_region(s3: Any, bucket: str, owner: str | None = None) -> str:
    """The region of `bucket`; a one-line error when it does not exist or is not ours to read. With `owner` (an
    account id), S3 refuses the call (403) unless that account owns the bucket (ExpectedBucketOwner)."""
    from botocore.exceptions import ClientError

    with aws_errors(f"bucket {bucket}"):
        try:
            location = s3.get_bucket_location(Bucket=bucket, **_owned_by(owner)).get("LocationConstraint")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchBucket", "404", "NotFound"):
                raise UserError(f"bucket {bucket} does not exist: create it in the stacks' region first") from None
            if code in ("AccessDenied", "403", "AllAccessDisabled"):
                whose = f" (or not owned by account {owner}, the deployer's)" if owner else ""
                raise UserError(f"bucket {bucket}: access denied{whose}: another account's bucket, or your "
                                "policy") from None
            raise
    # The API answers None for us-east-1 and "EU" for the oldest eu-west-1 buckets.
    return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)


def _owned_by(owner: str | None) -> dict[str, str]:
    return {"ExpectedBucketOwner": owner} if owner else {}


def upload_file(s3: Any, bucket: str, key: str, path: Path, content_type: str, owner: str | None = None) -> str:
    """Put `path` at `key`; returns the new object's VersionId ("" when the bucket is not versioned). With `owner`,
    S3 refuses the write unless that account owns the bucket."""
    with aws_errors(f"uploading {path.name} to s3://{bucket}/{key}"):
        made = s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes(), ContentType=content_type,
                             **_owned_by(owner))
    version = str((made or {}).get("VersionId") or "")
    return "" if version == "null" else version


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


def parse_key_values(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """`KEY=VALUE` strings -> dict (the value may contain '='); a later KEY wins."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise UserError(f"parameter {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


__all__ = [
    "INLINE_TEMPLATE_LIMIT",
    "inline_body",
    "LAMBDA_SOURCES",
    "S3_TEMPLATE_LIMIT",
    "PackageResult",
    "Upload",
    "build_zip",
    "do_package",
    "dockerfile_base_image",
    "dockerfile_env",
    "dockerfile_sources",
    "image_files",
    "lambda_files",
    "normalize_prefix",
    "sdk_entries",
    "parse_key_values",
    "split_parameters",
]
