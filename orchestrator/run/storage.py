"""Where a sweep's results live: Ray Tune's experiment state and checkpoints (`--results`).

A location is a local path (made absolute here, on the machine that runs the driver), a path on
a filesystem every node mounts, or a URI that pyarrow's filesystems resolve (`s3://BUCKET/PREFIX`,
`gs://...`). It is Tune's `storage_path`; a sweep's own directory is `<location>/<sweep name>`,
and that is what `sweeps.storage_path` records and `resume` restores from.

S3's endpoint and credentials come from the standard AWS_* variables (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION), which pyarrow reads itself on every node;
resweep never prints or stores them: a URI with credentials inside it is refused, and a URI's
query string (an endpoint, a region) is never shown in a message (`shown`).

Checkpoints: Tune keeps every checkpoint of a trial while the sweep runs (orchestrator/run/tuner.py's
CheckpointConfig(num_to_keep=None)). Tune's own pruning (num_to_keep=N) deletes a checkpoint as
soon as N newer ones are registered, while its last uploaded experiment snapshot, written every
10 s or more, can still name the deleted one; a driver killed then cannot be resumed ("Could not
recover from checkpoint as it does not exist on storage anymore"). So pruning waits until the
sweep is finished, when no resume will read the snapshot again: `prune_checkpoints` keeps each
trial's newest checkpoint (the one `trials.checkpoint_uri` names, which `model` exports).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from orchestrator.run import ray_compat
from resweep.errors import UserError

SWEEP_RECORD = "resweep-sweep.json"  # beside Tune's experiment state: what `db import` needs of the sweep

DEFAULT_RESULTS = "results"
RESULTS_ENV = "RESWEEP_RESULTS"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
OBJECT_STORE_HELP = "an object-store URI (--results s3://BUCKET/PREFIX, with AWS_* set on every node)"


# A query parameter that carries a credential (pyarrow's access_key / secret_key / session_token,
# a signed URL's signature, common spellings): never stored with a sweep, never shown.
_CREDENTIAL_PARAM = re.compile(r"(?i)(?:^|[&;])[\w.-]*(?:key|secret|token|pass|pwd|credential|signature)[\w.-]*=")


def is_uri(location: str) -> bool:
    return bool(_SCHEME.match(location)) and not location.startswith("file://")


def shown(location: str) -> str:
    """`location` fit for a message: a URI's query string (endpoint, region, whatever was put
    there) is never echoed, only `?...` saying there was one; user:secret@ is hidden too."""
    if not is_uri(location):
        return location
    scheme, rest = location.split("://", 1)
    if "@" in rest:  # a secret may hold '/', '?' or '#': hide up to the last '@'
        rest = "***@" + rest.rpartition("@")[2]
    base, query, _ = rest.partition("?")
    return f"{scheme}://{base}{'?...' if query else ''}"


def refuse_credentials(location: str, flag: str = "--results") -> None:
    """UserError when the URI `location` carries credentials (user:secret@, or a parameter such
    as secret_key=): they would be stored with the sweep and shown in its messages."""
    if not is_uri(location):
        return
    scheme, rest = location.split("://", 1)
    authority = rest.split("/", 1)[0]
    # An AWS secret key may hold '/': `s3://KEY:SE/CRET@bucket` has no '@' before its first '/'.
    if "@" in authority or (":" in authority and "@" in rest) or _CREDENTIAL_PARAM.search(rest.partition("?")[2]):
        raise UserError(f"{flag} {scheme}://...: credentials do not belong in the URI (they would be stored with "
                        "the sweep and shown in its messages); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                        "(on every node) instead")


def resolve(results: str | os.PathLike | None) -> str:
    """--results, else $RESWEEP_RESULTS, else ./results: an absolute path, or a URI as given
    (one that carries credentials is refused: `refuse_credentials`)."""
    value = str(results) if results not in (None, "") else os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS
    value = value.strip()
    if value.startswith("file://"):
        value = value[len("file://"):]
    if is_uri(value):
        refuse_credentials(value)
        base, query, params = value.partition("?")
        return base.rstrip("/") + query + params
    return str(Path(value).expanduser().resolve())


def join(location: str, *parts: str) -> str:
    """`location`/`parts`; a URI's query string (?endpoint_override=...) stays at the end."""
    base, query, params = location.partition("?") if is_uri(location) else (location, "", "")
    return "/".join([base.rstrip("/"), *parts]) + query + params


def parent(location: str) -> str:
    """The location `location` is directly under (its query string kept)."""
    base, query, params = location.partition("?") if is_uri(location) else (location, "", "")
    return (base.rstrip("/").rsplit("/", 1)[0] or "/") + query + params


def filesystem(location: str, flag: str = "--results") -> tuple[Any, str]:
    """pyarrow's filesystem for `location` and the path within it; UserError if it cannot be had."""
    import pyarrow.fs as pafs

    if not is_uri(location):
        return pafs.LocalFileSystem(), location
    try:
        return pafs.FileSystem.from_uri(location)
    except Exception as exc:  # an unknown scheme, a missing library, a malformed bucket name
        raise UserError(f"{flag} {shown(location)}: pyarrow cannot open it ({_scrubbed(exc, location)}); give a "
                        f"local path, a path every node shares, or {OBJECT_STORE_HELP}") from None


def exists(location: str, flag: str = "--results") -> bool:
    """Whether anything is at `location` (a sweep's directory, a file)."""
    import pyarrow.fs as pafs

    fs, path = filesystem(location, flag)
    try:
        return fs.get_file_info(path).type != pafs.FileType.NotFound
    except OSError as exc:
        raise UserError(f"{flag} {shown(location)}: cannot read it ({_scrubbed(exc, location)}); check the location "
                        "and, for object storage, AWS_ENDPOINT_URL and the credentials in AWS_*") from None


def _scrubbed(exc: BaseException, location: str) -> str:
    """The error's first line without the location's query string, should the library echo it."""
    line = first_line(exc)
    query = location.partition("?")[2] if is_uri(location) else ""
    return line.replace(query, "...") if query else line


def prune_checkpoints(experiment_dir: str, fs: Any = None) -> tuple[int, int]:
    """Remove every checkpoint of a finished sweep's trials but each one's newest; returns how many
    were removed and their bytes. `fs`: the pyarrow filesystem `experiment_dir` is a path on (as
    Tune's ResultGrid gives them), else it is resolved from `experiment_dir`."""
    import pyarrow.fs as pafs

    fs, root = (fs, experiment_dir) if fs is not None else filesystem(experiment_dir)
    removed = freed = 0
    for trial in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True)):
        if trial.type != pafs.FileType.Directory:
            continue
        checkpoints = sorted(c.path for c in fs.get_file_info(pafs.FileSelector(trial.path))
                             if c.type == pafs.FileType.Directory and c.base_name.startswith("checkpoint_"))
        for old in checkpoints[:-1]:  # checkpoint_NNNNNN: the highest index is the newest
            freed += sum(f.size or 0 for f in fs.get_file_info(pafs.FileSelector(old, recursive=True))
                         if f.type == pafs.FileType.File)
            fs.delete_dir(old)
            removed += 1
    return removed, freed


def first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:240]


def checkpoint_uri(checkpoint: Any) -> str:
    """A Tune checkpoint's location as one string: its path on the local filesystem, else a URI
    of its filesystem's scheme (`s3://bucket/prefix/...`) that `pyarrow.fs.FileSystem.from_uri`
    opens again."""
    filesystem, path = checkpoint.filesystem, str(checkpoint.path)
    scheme = getattr(filesystem, "type_name", "local")
    if scheme == "local" or "://" in path:
        return path
    return f"{scheme}://{path.lstrip('/')}"


def save_sweep_record(experiment_dir: str, *, name: str, spec: str, spec_hash: str,
                      git_commit: str | None, git_dirty: bool | None) -> None:
    """Write the sweep's row (name, spec text and hash, git state) as JSON into its results."""
    fs, path = ray_compat.fs_and_path(experiment_dir)
    fs.create_dir(path, recursive=True)
    record = {"name": name, "spec": spec, "spec_hash": spec_hash, "git_commit": git_commit, "git_dirty": git_dirty}
    with fs.open_output_stream(f"{path.rstrip('/')}/{SWEEP_RECORD}") as f:
        f.write(json.dumps(record, indent=1).encode())


def newest_checkpoint(filesystem: Any, trial_dir: str) -> str | None:
    """The newest non-empty `checkpoint_NNNNNN` in a trial's directory (a path on `filesystem`),
    as `checkpoint_uri` writes locations; None when there is none. Tune persists a checkpoint
    before its result reaches the driver, and registers it a step later, so a stop can leave the
    newest on storage unknown to Tune's state."""
    import pyarrow.fs as pafs

    try:
        found = [c.path for c in filesystem.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True))
                 if c.type == pafs.FileType.Directory and re.fullmatch(r"checkpoint_\d+", c.base_name)]
    except OSError:
        return None
    for path in sorted(found, reverse=True):  # checkpoint_NNNNNN: the highest index is the newest
        if any(f.type == pafs.FileType.File for f in filesystem.get_file_info(pafs.FileSelector(path))):
            scheme = getattr(filesystem, "type_name", "local")
            return path if scheme == "local" or "://" in path else f"{scheme}://{path.lstrip('/')}"
    return None
