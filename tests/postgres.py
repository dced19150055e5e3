"""A throwaway PostgreSQL server for the shared-study test and benchmark: Debian's binaries, a cluster in a temporary
folder, trust authentication on a free local port, stopped at the end. ``start_server`` says why when it
cannot start one (no binaries, no user to run it as), and the test skips with that reason."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def _binary(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the ``postgres`` user then."""
    if os.geteuid() != 0:
        return command
    runuser = shutil.which("runuser")
    if runuser is None:
        raise RuntimeError("running as root and no runuser to start PostgreSQL as the postgres user")
    return [runuser, "-u", "postgres", "--", *command]


def start_server() -> tuple[str, callable]:
    """(a SQLAlchemy URL of an empty database, a function that stops the server and removes its files).
    The cluster lives in its own temporary folder, readable by the server's user."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if not initdb or not pg_ctl:
        raise RuntimeError("no PostgreSQL server binaries (Debian: apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="pneumoscan-pg-"))
    data, port = folder / "data", _free_port()
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    run = lambda *args: subprocess.run(_as_server_user(list(args)), check=True, capture_output=True,  # noqa: E731
                                       text=True, timeout=120)
    try:
        run(initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        run(pg_ctl, "-D", str(data), "-l", str(folder / "server.log"), "-w", "-o",
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start")
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"PostgreSQL did not start: {err.stderr.strip() or err.stdout.strip()}") from err

    def stop() -> None:
        subprocess.run(_as_server_user([pg_ctl, "-D", str(data), "-m", "fast", "stop"]), capture_output=True,
                       timeout=120)
        shutil.rmtree(folder, ignore_errors=True)

    return f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres", stop
