"""Fixtures for the model-layer tests: the tiny random-weight Llama, built once per session."""

from __future__ import annotations

import pytest

from selfrefine.models.loading import load_model, resolve_model


@pytest.fixture(scope="session")
def tiny_dir(model_cache) -> str:
    """Directory of the `tiny` model in the session's model cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SELFREFINE_MODEL_CACHE", str(model_cache))
        patch.setenv("HF_HUB_OFFLINE", "1")
        return resolve_model("tiny")


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    """`(model, tokenizer)` of the tiny model in float32 on CPU; shared, so tests must not modify it."""
    return load_model(tiny_dir, dtype="float32", device="cpu")
