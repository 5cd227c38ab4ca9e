"""Pushing an exported directory to the Hugging Face Hub (`huggingface_hub.HfApi`)."""

from __future__ import annotations

from pathlib import Path

from selfrefine.errors import ConfigError


def push(directory: Path, repo_id: str, private: bool, api: object | None = None) -> str:
    """Create `repo_id` (a model repo; kept if it exists) and upload `directory` into it; returns its URL.

    The token is huggingface_hub's own (`HF_TOKEN` or `huggingface-cli login`)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = api or HfApi()
    try:
        url = api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(directory), repo_id=repo_id, repo_type="model",
                          commit_message="Upload model exported by selfrefine")
    except HfHubHTTPError as exc:
        raise ConfigError(f"cannot push to the Hub repo {repo_id}: {exc}; log in with `huggingface-cli login` "
                          "or set HF_TOKEN, and check the repo name") from exc
    return str(url)
