"""What a stage run records about where and how it ran: versions, host, redacted config."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import socket
from importlib import metadata
from typing import Any

from selfrefine import __version__

TRACKED_PACKAGES = ("torch", "transformers", "trl", "peft", "datasets", "vllm", "deepspeed", "prefect")
REDACTED = "***"
# Whole words of a key name: hf_token, db_password, api-key... but not max_new_tokens.
_SECRET_KEY = re.compile(r"(^|[_\-.])(password|passwd|secret|token|api[_-]?key|credentials?|auth)($|[_\-.])",
                         re.IGNORECASE)
# scheme://user:password@host → scheme://user:***@host
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/:@\s]*:)(?P<pw>[^@\s/]+)(?P<tail>@)")


def library_versions() -> dict[str, str | None]:
    """Installed versions (from package metadata: nothing is imported) plus python and selfrefine."""
    versions: dict[str, str | None] = {"python": platform.python_version(), "selfrefine": __version__}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def host_name() -> str:
    return socket.gethostname()


def redact_text(text: str) -> str:
    """Replace passwords inside URLs in free text (error messages, log lines)."""
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}{m['tail']}", text)


def redact(value: Any) -> Any:
    """A copy of a config snapshot with secrets removed: values under secret-looking keys and
    passwords inside URLs. Used for everything written to the store, logs and Prefect artifacts."""
    if isinstance(value, dict):
        return {k: (REDACTED if _SECRET_KEY.search(str(k)) and v not in (None, "") else redact(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def digest_json(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid is running on this host (a zombie counts as dead)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped by its parent) still answers kill(0): look at its state.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
