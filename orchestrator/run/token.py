"""A Ray cluster's token: where resweep finds it, and how it is kept out of every line it prints.

The token is read from --token-file, $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token
(the places Ray's own clients look, in that order). `Token` hides the value from repr and str;
errors name only where it came from. No Ray import: the command line reads tokens for the Jobs
API (orchestrator/cluster) without loading Ray.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from resweep.errors import UserError


TOKEN_HELP = "on the head node, `ray get-auth-token` prints it"


@dataclass(frozen=True)
class Token:
    """A Ray cluster token and where it was found; only `source` is ever shown."""

    value: str = field(repr=False)
    source: str

    def __str__(self) -> str:
        return f"<Ray token from {self.source}>"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.value}"}


def find_token(token_file: Path | None = None) -> Token | None:
    """The token from --token-file, $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token."""
    if token_file is not None:
        return _read_token(Path(token_file).expanduser(), f"--token-file {token_file}")
    if value := os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return Token(value, "$RAY_AUTH_TOKEN")
    if path := os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return _read_token(Path(path).expanduser(), f"$RAY_AUTH_TOKEN_PATH ({path})")
    default = Path.home() / ".ray" / "auth_token"
    if default.is_file():
        return _read_token(default, str(default))
    return None


def _read_token(path: Path, source: str) -> Token:
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        raise UserError(f"{source}: no such file (give the file that holds the cluster's Ray token; "
                        f"{TOKEN_HELP})") from None
    except OSError as exc:
        raise UserError(f"{source}: cannot read it ({exc.strerror})") from None
    if not value:
        raise UserError(f"{source}: the token file is empty ({TOKEN_HELP})")
    return Token(value, source)
