"""`selfrefine db`: schema migrations (Alembic owns the schema)."""

from __future__ import annotations

import argparse

from selfrefine.storage import migrations
from selfrefine.storage.engine import check_reachable, create_store_engine, redact_url, store_url


def register(sub: argparse._SubParsersAction) -> None:
    db = sub.add_parser("db", help="database schema: upgrade, downgrade, current")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="migrate the store at SELFREFINE_DB_URL to a revision")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=_upgrade)
    down = db_sub.add_parser("downgrade", help="migrate down to a revision (e.g. base)")
    down.add_argument("revision")
    down.set_defaults(func=_downgrade)
    cur = db_sub.add_parser("current", help="print the store's schema revision and the head")
    cur.set_defaults(func=_current)


def _engine():
    url = store_url()
    engine = create_store_engine(url)
    check_reachable(engine, url)
    return url, engine


def _upgrade(args) -> int:
    url, engine = _engine()
    migrations.upgrade(engine, args.revision)
    print(f"{redact_url(url)}: at revision {migrations.current_revision(engine)}")
    return 0


def _downgrade(args) -> int:
    url, engine = _engine()
    migrations.downgrade(engine, args.revision)
    print(f"{redact_url(url)}: at revision {migrations.current_revision(engine) or 'base'}")
    return 0


def _current(args) -> int:
    url, engine = _engine()
    print(f"{redact_url(url)}: revision {migrations.current_revision(engine) or 'none'} "
          f"(head {migrations.head_revision()})")
    return 0
