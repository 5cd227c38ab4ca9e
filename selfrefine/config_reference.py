"""The configuration reference, `docs/configuration.md`, rendered from the pydantic configs.

`render()` walks `RunConfig` and every model nested in it (each model once, at the first place it
appears, with the other places listed) and writes one table per model: field, type with its
constraints, default, and the field's description. It adds the Prefect UI's knobs, the presets
(the first sentence of each preset's leading comment) and the environment variables.

    selfrefine config-reference            # print it
    selfrefine config-reference --write    # write docs/configuration.md
    python -m selfrefine.config_reference --write

`tests/test_config_reference.py` fails when the file differs from `render()`.
"""

from __future__ import annotations

import argparse
import json
import re
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
COMMAND = "selfrefine config-reference --write"

# Read by selfrefine/settings.py, storage/ and cli/ at run time; not part of any config.
ENVIRONMENT = (
    ("SELFREFINE_HOME", "`~/.selfrefine`", "SQLite store, artifacts, model cache"),
    ("SELFREFINE_DB_URL", "`sqlite:///$SELFREFINE_HOME/selfrefine.db`",
     "the SQL store (any SQLAlchemy URL, e.g. `postgresql+psycopg://user@db-host/selfrefine`)"),
    ("SELFREFINE_DB_URL_SECRET", "unset",
     "name of a Prefect Secret block holding the store URL (used when `SELFREFINE_DB_URL` is unset)"),
    ("SELFREFINE_ARTIFACTS", "`$SELFREFINE_HOME/artifacts`", "artifact root (directory or fsspec URL, e.g. `s3://…`)"),
    ("SELFREFINE_MODEL_CACHE", "`$SELFREFINE_HOME/models`", "the converted packaged model and the tiny test model"),
    ("SELFREFINE_DATA_ROOT", "unset",
     "every data path (and each source's `root`) and every local model directory a config names must lie "
     "inside it (the shipped demo data stays readable)"),
    ("SELFREFINE_PROJECT_DIR", "unset", "the checkout `prefect.yaml`'s deployments run from"),
    ("PREFECT_API_URL", "unset", "the Prefect server; when unset, `selfrefine demo` starts one on 127.0.0.1:4200"),
    ("HF_TOKEN", "unset", "Hugging Face hub token for gated data sets and models"),
)

_CONSTRAINTS = ((annotated_types.Ge, "ge", "≥"), (annotated_types.Gt, "gt", ">"), (annotated_types.Le, "le", "≤"),
                (annotated_types.Lt, "lt", "<"), (annotated_types.MinLen, "min_length", "length ≥"),
                (annotated_types.MaxLen, "max_length", "length ≤"))


def type_name(annotation: object) -> str:
    """An annotation as a reader writes it: `int | None`, `'dpo' | 'rejection_sampling'`, `list[str]`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "None"
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_name(a) for a in args)}]" if args else name
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def constraints(field: FieldInfo) -> str:
    found = []
    for meta in field.metadata:
        for kind, attr, sign in _CONSTRAINTS:
            if isinstance(meta, kind):
                found.append(f"{sign} {getattr(meta, attr)}")
    return ", ".join(found)


def _models_in(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _is_list(annotation: object) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_list(a) for a in typing.get_args(annotation))
    return origin is list


def default_text(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
    if isinstance(value, BaseModel):
        return "its section's defaults"
    try:
        return f"`{json.dumps(value, ensure_ascii=False)}`"
    except TypeError:
        return f"`{value!r}`"


def _cell(text: str) -> str:
    return re.sub(r"\s+", " ", text).replace("|", "\\|").strip()


def _places(root: type[BaseModel], path: str = "") -> Iterator[tuple[type[BaseModel], str]]:
    """Every (model, path) below `root`, depth first in field order."""
    for name, field in root.model_fields.items():
        here = f"{path}.{name}" if path else name
        if _is_list(field.annotation):
            here += "[]"
        for model in _models_in(field.annotation):
            yield model, here
            yield from _places(model, here)


def _table(model: type[BaseModel], paths: dict[type[BaseModel], list[str]]) -> list[str]:
    lines = ["| field | type | default | what it does |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        kind = f"`{type_name(field.annotation)}`"
        limits = constraints(field)
        if limits:
            kind += f", {limits}"
        nested = [m for m in _models_in(field.annotation) if m in paths]
        description = field.description or ""
        if nested:
            description += " " + " ".join(f"Fields: [`{paths[m][0]}`](#{_anchor(paths[m][0])})." for m in nested)
        lines.append(f"| `{name}` | {_cell(kind)} | {_cell(default_text(field))} | {_cell(description)} |")
    return lines


def _anchor(path: str) -> str:
    """GitHub's heading anchor for a heading that is exactly `path` in backticks."""
    return re.sub(r"[^a-z0-9_\- ]", "", path.lower()).replace(" ", "-")


def _doc(model: type[BaseModel]) -> str:
    return re.sub(r"\s+", " ", (model.__doc__ or "").strip())


def _presets() -> list[str]:
    from selfrefine.flows.config import preset_dir

    lines = ["| preset | what it is |", "|---|---|"]
    for path in sorted(preset_dir().glob("*.yaml")):
        comment = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.startswith("#"):
                break
            comment.append(line.lstrip("#").strip())
        text = " ".join(comment)
        first = re.split(r"(?<=\.)\s+", text, maxsplit=1)[0] if text else ""
        lines.append(f"| `{path.stem}` | {_cell(first)} |")
    return lines


def render() -> str:
    """The whole of docs/configuration.md."""
    from selfrefine.flows.config import RunConfig
    from selfrefine.flows.knobs import RunKnobs

    paths: dict[type[BaseModel], list[str]] = {}
    for model, path in _places(RunConfig):
        paths.setdefault(model, []).append(path)
    out = [
        "# Configuration reference",
        "",
        f"<!-- Generated from the pydantic configs by `{COMMAND}`; do not edit by hand. -->",
        "",
        "A run is configured by one `RunConfig` (`selfrefine/flows/config.py`): a preset "
        "(`selfrefine run --preset NAME`), a YAML file (`--config run.yaml`), or the `self-refine` "
        "deployment's form in the Prefect UI. Any field can be overridden on the command line with "
        "`--set section.field=value`, e.g. `--set generate.max_new_tokens=64`. The number of iterations "
        "is not part of the config (`selfrefine run -n N`). Unknown fields and out-of-range values are "
        "refused before anything runs.",
        "",
        "## Presets",
        "",
        "Presets are YAML files in `selfrefine/presets/`; each runs on the shipped demo data, so point "
        "`data` at your own sets.",
        "",
        *_presets(),
        "",
        "## `RunConfig`",
        "",
        _doc(RunConfig),
        "",
        *_table(RunConfig, paths),
    ]
    for model, where in paths.items():
        out += ["", f"{'##' if where[0].count('.') == 0 else '###'} `{where[0]}`", ""]
        if _doc(model):
            out += [f"{_doc(model)} (`{model.__name__}`)", ""]
        if len(where) > 1:
            out += ["Also at: " + ", ".join(f"`{p}`" for p in where[1:]) + ".", ""]
        out += _table(model, paths)
    out += ["", "## Prefect UI knobs", "",
            "The `self-refine` deployment's form leads with the preset, the number of iterations and these "
            "knobs; each one left empty keeps the preset's value, and the full `RunConfig` follows them.",
            "", *_table(RunKnobs, paths),
            "", "## Environment variables", "",
            "| variable | default | meaning |", "|---|---|---|",
            *(f"| `{name}` | {default} | {_cell(meaning)} |" for name, default, meaning in ENVIRONMENT)]
    return "\n".join(out) + "\n"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("config-reference", help=f"print the configuration reference, or write {DOC_PATH.name}")
    _arguments(parser)
    parser.set_defaults(func=_run)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--write", action="store_true", help="write docs/configuration.md instead of printing it")
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/configuration.md is stale")


def _run(args: argparse.Namespace) -> int:
    text = render()
    if args.check:
        current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else ""
        if current != text:
            print(f"{DOC_PATH} is stale: run `{COMMAND}`")
            return 1
        return 0
    if args.write:
        DOC_PATH.parent.mkdir(parents=True, exist_ok=True)
        DOC_PATH.write_text(text, encoding="utf-8")
        print(f"wrote {DOC_PATH}")
        return 0
    print(text, end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m selfrefine.config_reference", description=__doc__)
    _arguments(parser)
    return _run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
