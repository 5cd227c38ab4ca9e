"""What a stage run records about where and how it ran: versions, host, its config snapshot.

A config snapshot is what resuming a run rebuilds it from, so it is stored whole except for the
fields declared secret (`config_snapshot`). `redact` is for what people see (the CLI, logs, Prefect
artifacts): it hides values under secret-looking keys and passwords and tokens in text.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import socket
from importlib import metadata
from typing import Any, get_args

from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic.fields import FieldInfo

from selfrefine import __version__

TRACKED_PACKAGES = ("torch", "transformers", "trl", "peft", "datasets", "vllm", "deepspeed", "prefect")
REDACTED = "***"
# Whole words of a key name: hf_token, db_password, api-key... but not max_new_tokens.
_SECRET_KEY = re.compile(r"(^|[_\-.])(password|passwd|secret|token|api[_-]?key|credentials?|auth)($|[_\-.])",
                         re.IGNORECASE)
# scheme://user:password@host → scheme://user:***@host
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/:@\s]*:)(?P<pw>[^@\s/]+)(?P<tail>@)")
# Hugging Face access tokens (hf_ + 20 or more letters and digits), wherever they appear in text.
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b")
# Mappings whose keys are names people choose (a dimension called "token_efficiency"), not field
# names: their keys never mark a value as secret.
NAMED_MAPPINGS = frozenset({"dimension_definitions"})


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
    """Replace passwords inside URLs and Hugging Face tokens in free text (errors, log lines)."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}{m['tail']}", text)
    return _HF_TOKEN.sub(REDACTED, text)


def redact(value: Any, *, names: bool = False) -> Any:
    """A copy for display (CLI output, logs, Prefect artifacts) with secrets removed: values under
    secret-looking keys, passwords inside URLs and tokens in text. Never stored: resuming from a
    redacted config would run a different config. `names` marks a mapping keyed by chosen names."""
    if isinstance(value, dict):
        return {k: (REDACTED if not names and _SECRET_KEY.search(str(k)) and v not in (None, "")
                    else redact(v, names=k in NAMED_MAPPINGS))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def is_secret_field(field: FieldInfo) -> bool:
    """A config field declared secret: typed `SecretStr`/`SecretBytes` (also inside Optional, list…)
    or marked `json_schema_extra={"secret": True}`."""
    extra = field.json_schema_extra
    if isinstance(extra, dict) and extra.get("secret"):
        return True
    todo = [field.annotation]
    while todo:
        tp = todo.pop()
        if tp in (SecretStr, SecretBytes):
            return True
        todo.extend(get_args(tp))
    return False


def _secret_exclude(value: Any) -> Any:
    """The `model_dump(exclude=...)` spec leaving out every secret field of `value`, at any depth."""
    if isinstance(value, BaseModel):
        spec = {}
        for name, field in type(value).model_fields.items():
            sub = True if is_secret_field(field) else _secret_exclude(getattr(value, name))
            if sub:
                spec[name] = sub
        return spec or None
    if isinstance(value, (list, tuple)):
        spec = {i: sub for i, v in enumerate(value) if (sub := _secret_exclude(v))}
        return spec or None
    if isinstance(value, dict):
        spec = {k: sub for k, v in value.items() if (sub := _secret_exclude(v))}
        return spec or None
    return None


def config_snapshot(config: BaseModel) -> dict[str, Any]:
    """The config as stored with a run or stage run: every field but the secret ones, unredacted,
    so that resume rebuilds exactly the config the run started with. A secret (a token, a
    password) comes from the environment or a Prefect Secret block, never from the store."""
    return config.model_dump(mode="json", exclude=_secret_exclude(config))


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
