"""One exception hierarchy for every error a user can cause or fix.

User-facing commands turn a `SelfRefineError` into one line on stderr and a non-zero exit;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SelfRefineError(Exception):
    """Base of every known, user-fixable error. The message says what is wrong and how to fix it."""

    exit_code = 2


class ConfigError(SelfRefineError):
    """A configuration value is invalid or a combination of values cannot work."""


class DataError(SelfRefineError):
    """A data file is malformed; names the file, the 1-based line (or row) and the field."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.path, self.line, self.field = path, line, field
        where = ":".join(str(p) for p in (path, line) if p is not None)
        prefix = f"{where}: " if where else ""
        suffix = f" (field '{field}')" if field else ""
        super().__init__(f"{prefix}{message}{suffix}")


class UnknownDimensionError(ConfigError):
    """A preference dimension that is neither built in nor defined in the config."""


class ModelLoadError(SelfRefineError):
    """A model name or directory that cannot be found or loaded."""


class StoreError(SelfRefineError):
    """The SQL store cannot be reached, is not migrated, or refuses an operation."""


class NotFoundError(StoreError):
    """An id (run, iteration, stage run, artifact) that the store does not hold."""


class ArtifactIntegrityError(StoreError):
    """An artifact's bytes no longer match the digest it was registered with."""


class PathEscapeError(SelfRefineError):
    """A path from config or data that would leave its allowed root."""


class LeaseHeldError(SelfRefineError):
    """Another live process holds the run's lease (e.g. a second concurrent resume)."""


class StageFailedError(SelfRefineError):
    """A stage raised; its stage run was recorded as failed with the error text."""
