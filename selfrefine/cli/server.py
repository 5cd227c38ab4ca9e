"""`selfrefine server start|stop|status` and `selfrefine demo`.

The demo runs against the Prefect server at PREFECT_API_URL, or else starts a local one in the
background (bound to 127.0.0.1, state under $SELFREFINE_HOME/prefect) and leaves it running so
the run can be browsed in the UI; `selfrefine server stop` (or `make server-stop`) stops it.

The Prefect server has no authentication: anyone who reaches it can run deployments and read every
run. Binding an address other than loopback therefore takes `--allow-remote`. `server stop` signals
only the process `server start` launched, recognised by the command line recorded in its pid file.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from selfrefine import settings
from selfrefine.errors import ConfigError, SelfRefineError

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 4200
SERVER_ARGS = ["-m", "prefect", "server", "start"]  # after the interpreter, before --host and --port


def register(sub: argparse._SubParsersAction) -> None:
    server = sub.add_parser("server", help="a local Prefect server for the UI (127.0.0.1 by default)")
    server_sub = server.add_subparsers(dest="server_command", required=True)
    start = server_sub.add_parser("start", help="start it in the background (no-op if running)")
    start.add_argument("--host", default=DEFAULT_HOST, help="bind address (default 127.0.0.1)")
    start.add_argument("--port", type=int, default=DEFAULT_PORT)
    start.add_argument("--allow-remote", action="store_true",
                       help="allow a --host other than loopback (the Prefect server has no authentication)")
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


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine (localhost, 127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name, or 0.0.0.0 / :: style wildcards are not loopback


NO_AUTH_WARNING = ("the Prefect server has no authentication: anyone who can reach {host}:{port} can run "
                   "deployments and read every run; keep it behind a firewall or an authenticating proxy")


def start_server(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, wait: float = 90.0,
                 allow_remote: bool = False) -> str:
    """Start (or find) a local Prefect server; return its API URL. A non-loopback `host` needs
    `allow_remote` (ConfigError otherwise, before anything starts)."""
    if not is_loopback(host):
        if not allow_remote:
            raise ConfigError(f"--host {host} is not a loopback address and "
                              f"{NO_AUTH_WARNING.format(host=host, port=port)}; pass --allow-remote to bind it anyway")
        print(f"selfrefine: warning: {NO_AUTH_WARNING.format(host=host, port=port)}", file=sys.stderr)
    api = f"http://{host}:{port}/api"
    if healthy(api):
        return api
    env = {**os.environ, "PREFECT_HOME": str(_state_dir()), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_API_URL": api}
    env.pop("PREFECT_API_URL", None)
    log = open(_state_dir() / "server.log", "ab")
    argv = [sys.executable, *SERVER_ARGS, "--host", host, "--port", str(port)]
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    _pid_file().write_text(json.dumps({"pid": proc.pid, "cmdline": argv}))
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


def _cmdline(pid: int) -> list[str] | None:
    """The command line of a live process (None if there is no such process)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")[:-1] if raw else []


def _recorded_server(pid_file: Path) -> tuple[int, list[str]]:
    """The pid and command line `start_server` recorded; ConfigError if the file is not one it wrote."""
    try:
        record = json.loads(pid_file.read_text())
        pid, cmdline = record["pid"], record["cmdline"]
        if isinstance(pid, bool) or not isinstance(pid, int) or not isinstance(cmdline, list):
            raise TypeError
        if cmdline[1:5] != SERVER_ARGS:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{pid_file} is not a pid file written by `selfrefine server start`; removed it, "
                          "signalled nothing") from None
    return pid, cmdline


def stop_server(timeout: float = 20.0) -> bool:
    """Stop the background server `start_server` launched: SIGINT (it ignores a first SIGTERM), then
    SIGKILL, to its process group. Returns False when no server was started here (or it is gone).

    The pid file is removed in every case. Nothing is signalled unless the recorded pid is above 1
    and names a live process whose command line is the one recorded at start: a reused pid or an
    edited file must never make this signal another process (or, with pid 0 or 1, every process).
    """
    pid_file = _pid_file()
    if not pid_file.exists():
        return False
    try:
        pid, recorded = _recorded_server(pid_file)
    finally:
        pid_file.unlink(missing_ok=True)
    if pid <= 1:
        raise ConfigError(f"{pid_file} names pid {pid}, which is no server this command started; "
                          "removed the pid file, signalled nothing")
    actual = _cmdline(pid)
    if not actual:
        return False  # the server exited (gone, or a zombie): only its stale pid file was left
    if actual != recorded:
        raise ConfigError(f"pid {pid} is not the Prefect server `selfrefine server start` launched (its command "
                          f"line is {' '.join(actual)[:200]!r}); removed the stale pid file, signalled nothing")
    # The server leads its own session (start_new_session), so its workers share its group.
    try:
        send = os.killpg if os.getpgid(pid) == pid else os.kill
    except ProcessLookupError:
        return True
    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGKILL, 5.0)):
        try:
            send(pid, sig)
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
    api = start_server(args.host, args.port, allow_remote=args.allow_remote)
    print(f"Prefect server at {api.removesuffix('/api')} (API {api}); stop it with `selfrefine server stop`")
    print(f"export PREFECT_API_URL={api}")
    return 0


def _stop(args) -> int:
    print("stopped the local Prefect server" if stop_server()
          else "no local Prefect server started by `selfrefine server start` is running")
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
    from selfrefine.cli.run import print_summary
    from selfrefine.flows.self_refine import self_refine

    # The main job runs for minutes: show its progress (stage, step, examples/s) on the terminal,
    # as `selfrefine run -v` does. Third-party loggers stay at WARNING.
    logging.getLogger("selfrefine").setLevel(logging.INFO)
    cfg = build_config(args.preset, None, [])
    started = time.monotonic()
    run_id = self_refine(config=cfg, n_iterations=args.iterations)
    print(f"\nselfrefine demo: run {run_id} finished in {time.monotonic() - started:.0f}s")
    print_summary(run_id)
    return 0
