"""Errors a user can cause: `UserError` lives in resweep.errors (the ground floor, which trainers
and db import too); re-exported here for the orchestrator's modules."""

from resweep.errors import UserError

__all__ = ["UserError"]
