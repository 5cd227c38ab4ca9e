"""`selfrefine server start|stop|status` and `selfrefine demo`.

The demo runs against the Prefect server at PREFECT_API_URL, or else starts a local one in the
background (bound to 127.0.0.1, state under $SELFREFINE_HOME/prefect) and leaves it running so
the run can be browsed in the UI; `selfrefine server stop` (or `make server-stop`) stops it.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from selfrefine import settings
from selfrefine.errors import SelfRefineError

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 4200


def register(sub: argparse._SubParsersAction) -> None:
    server = sub.add_parser("server", help="a local Prefect server for the UI (127.0.0.1 by default)")
    server_sub = server.add_subparsers(dest="server_command", required=True)
    start = server_sub.add_parser("start", help="start it in the background (no-op if running)")
    start.add_argument("--host", default=DEFAULT_HOST, help="bind address (default 127.0.0.1)")
    start.add_argument("--port", type=int, default=DEFAULT_PORT)
    start.set_defaults(func=_start)
    stop = server_sub.add_parser("stop", help="stop the server started by `server start` / `demo`")
    stop.set_defaults(func=_stop)
    status = server_sub.add_parser("status", help="is the local server up?")
    status.set_defaults(func=_status)

    demo = sub.add_parser("demo", help="the main job: a 2-iteration run on the cpu preset with the "
                                       "packaged model and the shipped demo data")
    demo.add_argument("--preset", default="cpu")
    demo.add_argument("-n", "--iterations", type=int, default=2)
    demo.add_argument("--port", type=int, default=DEFAULT_PORT)
    demo.set_defaults(func=_demo)


def _state_dir() -> Path:
    path = settings.home() / "prefect"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _pid_file() -> Path:
    return _state_dir() / "server.pid"


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def start_server(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, wait: float = 90.0) -> str:
    """Start (or find) a local Prefect server; return its API URL."""
    api = f"http://{host}:{port}/api"
    if healthy(api):
        return api
    env = {**os.environ, "PREFECT_HOME": str(_state_dir()), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_API_URL": api}
    env.pop("PREFECT_API_URL", None)
    log = open(_state_dir() / "server.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", host,
                             "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    _pid_file().write_text(str(proc.pid))
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SelfRefineError(f"the Prefect server exited at start (code {proc.returncode}); "
                                  f"see {_state_dir() / 'server.log'}")
        if healthy(api):
            return api
        time.sleep(0.5)
    raise SelfRefineError(f"the Prefect server did not answer at {api} within {wait:.0f}s; "
                          f"see {_state_dir() / 'server.log'}")


def stop_server(timeout: float = 20.0) -> bool:
    """Stop the background server: SIGINT (it ignores a first SIGTERM), then SIGKILL."""
    pid_file = _pid_file()
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().strip() or 0)
    pid_file.unlink()
    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.2)
    return True


def _start(args) -> int:
    api = start_server(args.host, args.port)
    print(f"Prefect server at {api.removesuffix('/api')} (API {api}); stop it with `selfrefine server stop`")
    print(f"export PREFECT_API_URL={api}")
    return 0


def _stop(args) -> int:
    print("stopped the local Prefect server" if stop_server() else "no local Prefect server was started here")
    return 0


def _status(args) -> int:
    api = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}/api"
    up = healthy(api)
    print(f"{api}: {'up' if up else 'down'}")
    return 0 if up else 1


def _demo(args) -> int:
    from selfrefine.cli.run import build_config

    if not os.environ.get("PREFECT_API_URL"):
        api = start_server(DEFAULT_HOST, args.port)
        os.environ["PREFECT_API_URL"] = api
        print(f"started a local Prefect server: {api.removesuffix('/api')} (stop: make server-stop)")
    from selfrefine.cli.run import _print_summary
    from selfrefine.flows.self_refine import self_refine

    # The main job runs for minutes: show its progress (stage, step, examples/s) on the terminal,
    # as `selfrefine run -v` does. Third-party loggers stay at WARNING.
    logging.getLogger("selfrefine").setLevel(logging.INFO)
    cfg = build_config(args.preset, None, [])
    started = time.monotonic()
    run_id = self_refine(config=cfg, n_iterations=args.iterations)
    print(f"\nselfrefine demo: run {run_id} finished in {time.monotonic() - started:.0f}s")
    _print_summary(run_id)
    return 0
