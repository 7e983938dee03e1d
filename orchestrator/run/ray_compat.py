"""Every private Ray name resweep uses, in one place.

Ray 2.60 offers no public API for these; each is wrapped here so that a Ray upgrade is one file
to read, and tests/orchestrator/run/test_ray_compat.py fails by name when one of them moves.
Written for Ray 2.60 (`RAY_VERSION` below is what that test checks against the installed Ray).
"""

from __future__ import annotations

from typing import Any

RAY_VERSION = "2.60"


def fs_and_path(uri: str) -> tuple[Any, str]:
    """pyarrow's filesystem and the path within it for a local path or a URI (s3://bucket/prefix):
    Tune's own resolution of storage paths, so results are read and written where Tune does."""
    from ray.train._internal.storage import get_fs_and_path

    return get_fs_and_path(uri)
