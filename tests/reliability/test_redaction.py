"""Secrets stay out of everything a run leaves: a run on a PostgreSQL store whose URL carries a
password, with a hub token in the environment, that fails once and is resumed, leaves neither
secret in any table of the store, in its logs (stdout and stderr at INFO level), or in Prefect
(flow and task runs with their parameters, logs, artifacts). The run starts with the URL in
SELFREFINE_DB_URL and is resumed and inspected with it read from a Prefect Secret block."""

from __future__ import annotations

import json

import pytest
from prefect.blocks.system import Secret
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from selfrefine.storage.engine import DB_URL_SECRET_ENV
from tests.flows.conftest import cli_env, prefect_api, selfrefine  # noqa: F401 - fixtures
from tests.reliability.conftest import dump_tables
from tests.storage.conftest import pg_skip_reason, pg_url  # noqa: F401 - fixtures

DB_PASSWORD = "pw-Zq81-never-log-me"
HUB_TOKEN = "hf_NeverLogMeTokenQx72Vb19Kd40"
SECRET_BLOCK = "selfrefine-test-db-url"


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


@pytest.mark.postgres
def test_no_secret_reaches_the_store_the_logs_or_prefect(cli_env, pg_url):
    url = make_url(pg_url).set(password=DB_PASSWORD)  # trust auth: the password is never checked
    secret_url = url.render_as_string(hide_password=False)
    assert DB_PASSWORD in secret_url
    env = {**cli_env, "SELFREFINE_DB_URL": secret_url, "HF_TOKEN": HUB_TOKEN,
           "HUGGING_FACE_HUB_TOKEN": HUB_TOKEN, "PREFECT_LOGGING_LEVEL": "INFO"}
    Secret(value=secret_url).save(SECRET_BLOCK, overwrite=True)
    from_block = {k: v for k, v in env.items() if k != "SELFREFINE_DB_URL"}
    from_block[DB_URL_SECRET_ENV] = SECRET_BLOCK
    logs = []
    migrated = selfrefine(env, "db", "upgrade")
    logs.append(migrated.stdout + migrated.stderr)
    failed = selfrefine(env, "-v", "run", "--preset", "tiny", "-n", "1", fault="evaluate@1:start", check=False)
    assert failed.returncode == 2 and "injected fault" in failed.stderr, failed.stderr[-2000:]
    logs.append(failed.stdout + failed.stderr)
    run_id = failed.stderr.split("selfrefine resume ")[-1].split("`")[0].strip()
    after_failure = json.dumps(dump_tables(create_engine(pg_url)), sort_keys=True)
    assert "injected fault" in after_failure  # the failure's traceback is recorded (until the resume)
    for args in (("-v", "resume", run_id), ("show", run_id), ("doctor",), ("db", "current")):
        proc = selfrefine(from_block, *args)
        logs.append(proc.stdout + proc.stderr)
    assert url.render_as_string(hide_password=True) in proc.stdout  # `db current` read the block
    everything = {
        "logs": "\n".join(logs),
        "store after the failure": after_failure,
        "store": json.dumps(dump_tables(create_engine(pg_url)), sort_keys=True),
        "prefect": _prefect_records(),
    }
    assert "INFO" in everything["logs"] and run_id in everything["store"]
    for where, text in everything.items():
        assert DB_PASSWORD not in text, f"the database password leaked into {where}"
        assert HUB_TOKEN not in text, f"the hub token leaked into {where}"
    # The URL itself, minus its password, is what the logs may name.
    assert url.render_as_string(hide_password=True) in migrated.stdout
