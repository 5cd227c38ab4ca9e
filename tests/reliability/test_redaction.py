"""Secrets stay out of everything a run leaves, and nothing else is redacted.

A run on SQLite and on PostgreSQL (its URL carrying a password), with a hub token in the
environment and a dimension whose name and definition look like secret words, fails mid-run and is
resumed: neither secret is in any table of the store, in its logs (stdout and stderr at INFO level)
or in Prefect (flow and task runs with their parameters, logs, artifacts); the run resumes under
exactly the config it started with (same digest, the dimension intact) and the store holds no
redaction mark. The run starts with the URL in SELFREFINE_DB_URL and is resumed and inspected with
it read from a Prefect Secret block."""

from __future__ import annotations

import json
import uuid

import pytest
import yaml
from prefect.blocks.system import Secret
from pydantic import BaseModel, Field, SecretStr
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from selfrefine.flows.config import RunConfig, load_preset
from selfrefine.flows.self_refine import config_digest
from selfrefine.provenance import REDACTED, config_snapshot, redact, redact_text
from selfrefine.storage import repository as repo
from selfrefine.storage.engine import DB_URL_SECRET_ENV, Store
from tests.flows.conftest import cli_env, prefect_api, selfrefine  # noqa: F401 - fixtures
from tests.reliability.conftest import dump_tables
from tests.storage.conftest import pg_skip_reason, pg_url  # noqa: F401 - fixtures

DB_PASSWORD = "pw-Zq81-never-log-me"
HUB_TOKEN = "hf_NeverLogMeTokenQx72Vb19Kd40"
SECRET_BLOCK = "selfrefine-test-db-url"
# A user's dimension that a regex over key names or words would take for a secret.
DIMENSIONS = {"token_efficiency": "Answers in few tokens and never asks the user for a password, "
                                  "secret or api key"}


def _prefect_records() -> str:
    """Every flow run, task run, log line and artifact on the Prefect server, as JSON text."""
    from prefect.client.orchestration import get_client

    parts = []
    with get_client(sync_client=True) as client:
        for read in (client.read_flow_runs, client.read_task_runs, client.read_artifacts, client.read_logs):
            offset = 0
            while batch := read(limit=200, offset=offset):
                parts += [item.model_dump_json() for item in batch]
                offset += len(batch)
    return "\n".join(parts)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def secret_store_url(request, selfrefine_home) -> tuple[str, str | None]:
    """The store URL as the user gives it (with its password, on PostgreSQL) and that password."""
    if request.param == "sqlite":
        return f"sqlite:///{selfrefine_home / 'redaction.db'}", None
    url = make_url(request.getfixturevalue("pg_url")).set(password=DB_PASSWORD)  # trust auth: never checked
    return url.render_as_string(hide_password=False), DB_PASSWORD


def test_no_secret_leaks_and_resume_reads_the_exact_config(cli_env, secret_store_url, tmp_path):
    secret_url, password = secret_store_url
    cfg = load_preset("tiny").model_copy(update={"dimension_definitions": DIMENSIONS})
    cfg = RunConfig.model_validate(cfg.model_dump(mode="json"))  # the definitions shared by every stage
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {**cli_env, "SELFREFINE_DB_URL": secret_url, "HF_TOKEN": HUB_TOKEN,
           "HUGGING_FACE_HUB_TOKEN": HUB_TOKEN, "PREFECT_LOGGING_LEVEL": "INFO"}
    Secret(value=secret_url).save(SECRET_BLOCK, overwrite=True)
    from_block = {k: v for k, v in env.items() if k != "SELFREFINE_DB_URL"}
    from_block[DB_URL_SECRET_ENV] = SECRET_BLOCK
    logs = []
    migrated = selfrefine(env, "db", "upgrade")
    logs.append(migrated.stdout + migrated.stderr)
    failed = selfrefine(env, "-v", "run", "--config", str(config_file), "-n", "1", fault="evaluate@1:start",
                        check=False)
    assert failed.returncode == 2 and "injected fault" in failed.stderr, failed.stderr[-2000:]
    logs.append(failed.stdout + failed.stderr)
    run_id = failed.stderr.split("selfrefine resume ")[-1].split("`")[0].strip()
    plain_url = make_url(secret_url).render_as_string(hide_password=False)
    after_failure = json.dumps(dump_tables(create_engine(plain_url)), sort_keys=True)
    assert "injected fault" in after_failure  # the failure's traceback is recorded (until the resume)
    for args in (("-v", "resume", run_id), ("show", run_id), ("doctor",), ("db", "current")):
        proc = selfrefine(from_block, *args)
        logs.append(proc.stdout + proc.stderr)
    shown_url = make_url(secret_url).render_as_string(hide_password=True)
    assert shown_url in proc.stdout  # `db current` read the block
    everything = {
        "logs": "\n".join(logs),
        "store after the failure": after_failure,
        "store": json.dumps(dump_tables(create_engine(plain_url)), sort_keys=True),
        "prefect": _prefect_records(),
    }
    # SQLite keeps a UUID as 32 hex digits, PostgreSQL as a uuid.
    assert "INFO" in everything["logs"] and uuid.UUID(run_id).hex in everything["store"].replace("-", "")
    for where, text in everything.items():
        if password:
            assert password not in text, f"the database password leaked into {where}"
        assert HUB_TOKEN not in text, f"the hub token leaked into {where}"
    # The URL itself, minus its password, is what the logs may name.
    assert shown_url in migrated.stdout

    # Nothing that is not a secret was redacted: the store holds the config the run started with.
    for where in ("store after the failure", "store"):
        assert REDACTED not in everything[where], f"a value that is no secret was redacted in the {where}"
    store = Store(plain_url)
    try:
        with store.session() as s:
            run = repo.resolve(s, run_id)
            assert run.status.value == "completed", run.error
            assert run.config == cfg.model_dump(mode="json")
            assert run.config_digest == config_digest(cfg)
            assert RunConfig.model_validate(run.config).dimension_definitions == DIMENSIONS
            stage_runs = [sr for it in repo.iterations_of(s, run.id) for sr in repo.stage_runs_of(s, it.id)]
            with_definitions = [sr for sr in stage_runs if "dimension_definitions" in (sr.config or {})]
            assert with_definitions and all(sr.config["dimension_definitions"] == DIMENSIONS
                                            for sr in with_definitions)
    finally:
        store.dispose()


class _Hub(BaseModel):
    token: SecretStr | None = None
    api_key: str = Field("sk-123456", json_schema_extra={"secret": True})
    revision: str = "main"


class _Config(BaseModel):
    hub: _Hub = _Hub(token="hf_NotStoredEither000000000000000001")
    mirrors: list[_Hub] = [_Hub()]
    dimension_definitions: dict[str, str] = DIMENSIONS
    max_new_tokens: int = 8


def test_the_stored_snapshot_leaves_out_secret_fields_and_keeps_everything_else():
    snapshot = config_snapshot(_Config())
    assert snapshot == {"hub": {"revision": "main"}, "mirrors": [{"revision": "main"}],
                        "dimension_definitions": DIMENSIONS, "max_new_tokens": 8}
    # The run config declares no secret field: it is stored whole, as resume needs it.
    cfg = load_preset("tiny").model_copy(update={"dimension_definitions": DIMENSIONS})
    assert config_snapshot(cfg) == cfg.model_dump(mode="json")


def test_display_redacts_real_secrets_and_only_them():
    shown = redact({
        "hf_token": HUB_TOKEN, "db_password": DB_PASSWORD, "max_new_tokens": 8,
        "store": f"postgresql+psycopg://me:{DB_PASSWORD}@db.example/selfrefine",
        "note": f"the hub answered 401 for {HUB_TOKEN}",
        "dimension_definitions": DIMENSIONS,
        "train_judge": {"dimension_definitions": {"password_safety": "never reveals a password"}},
    })
    assert shown == {
        "hf_token": REDACTED, "db_password": REDACTED, "max_new_tokens": 8,
        "store": f"postgresql+psycopg://me:{REDACTED}@db.example/selfrefine",
        "note": f"the hub answered 401 for {REDACTED}",
        "dimension_definitions": DIMENSIONS,
        "train_judge": {"dimension_definitions": {"password_safety": "never reveals a password"}},
    }
    assert redact_text("hf_short and hf_tokens_are_words stay") == "hf_short and hf_tokens_are_words stay"
