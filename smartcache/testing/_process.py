"""One server process: config, spawn, readiness, faults, and stop by PID.

Every process started here is recorded in a process-wide registry and killed by PID at
interpreter exit (``atexit``), on SIGTERM/SIGHUP, after Ctrl-C (KeyboardInterrupt unwinds to
``atexit``) and, on Linux, when the Python process itself dies (``PR_SET_PDEATHSIG``), so a
crashed or interrupted test run leaves no server behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from smartcache.exceptions import TopologyError, TopologyNotReadyError
from smartcache.testing._binary import ServerBinary
from smartcache.testing._ports import ALLOCATOR

__all__ = ["ServerProcess", "live_pids", "stop_all"]

_REGISTRY: dict[int, ServerProcess] = {}
_REGISTRY_LOCK = threading.Lock()
_BIND_FAILURES = ("Address already in use", "Could not create server TCP listening socket")


def live_pids() -> list[int]:
    """PIDs of every server this process started and has not stopped yet."""
    with _REGISTRY_LOCK:
        return [pid for pid, proc in _REGISTRY.items() if proc.running]


def stop_all() -> None:
    """Kill every server this process started (SIGKILL by PID, then reap)."""
    with _REGISTRY_LOCK:
        procs = list(_REGISTRY.values())
    for proc in procs:
        proc.stop(graceful=False)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    os.setsid()  # no terminal Ctrl-C reaches the server; we stop it ourselves


def _install_exit_hooks() -> None:
    atexit.register(stop_all)
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) in (signal.SIG_DFL, None):
            signal.signal(signum, _exit_on_signal)


def _exit_on_signal(signum: int, _frame: Any) -> None:
    stop_all()
    raise SystemExit(128 + signum)


_install_exit_hooks()


def _config_text(settings: Mapping[str, str | int | None]) -> str:
    lines = []
    for key, value in settings.items():
        if value is None:
            continue
        text = str(value)
        if text == "" or (" " in text and not key.startswith("sentinel ")):
            text = '"' + text.replace('"', '\\"') + '"'
        lines.append(f"{key} {text}")
    return "\n".join(lines) + "\n"


class ServerProcess:
    """A redis-server / valkey-server (or sentinel) process on a port of its own.

    The config file and data directory stay in ``directory`` so the node can be restarted
    on the same port with the same config (cluster nodes keep their ``nodes.conf``).
    """

    def __init__(
        self,
        binary: ServerBinary,
        directory: Path,
        *,
        name: str,
        settings: Mapping[str, str | int | None],
        sentinel: bool = False,
        host: str = "127.0.0.1",
        cluster_bus: bool = False,
        password: str | None = None,
    ) -> None:
        self.binary = binary
        self.directory = directory
        self.name = name
        self.host = host
        self.sentinel = sentinel
        self.cluster_bus = cluster_bus
        self.password = password
        self._settings = dict(settings)
        self.port = 0
        self._popen: subprocess.Popen[bytes] | None = None
        self.paused = False

    # -- identity -----------------------------------------------------------------
    @property
    def address(self) -> str:
        """``host:port``."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``redis://host:port`` (no password in it)."""
        return f"redis://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """PID of the running process, or None when stopped."""
        return self._popen.pid if self._popen is not None else None

    @property
    def running(self) -> bool:
        """True while the process exists (paused counts as running)."""
        return self._popen is not None and self._popen.poll() is None

    @property
    def config_path(self) -> Path:
        """Path of this node's config file."""
        return self.directory / ("sentinel.conf" if self.sentinel else "server.conf")

    @property
    def log_path(self) -> Path:
        """Path of this node's log file."""
        return self.directory / "server.log"

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<ServerProcess {self.name} {self.address} pid={self.pid} {state}>"

    def log_tail(self, lines: int = 25) -> str:
        """The last ``lines`` lines of this node's log."""
        try:
            with self.log_path.open("r", errors="replace") as fh:
                return "".join(deque(fh, maxlen=lines))
        except OSError:
            return "(no log)"

    # -- lifecycle ----------------------------------------------------------------
    def start(self, *, timeout: float = 20.0, attempts: int = 5) -> None:
        """Pick a free port, write the config, spawn, and wait until PING answers.

        A bind failure (port taken between the check and the bind) retries another port.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        for attempt in range(attempts):
            self.port = ALLOCATOR.allocate(with_bus=self.cluster_bus)
            self._write_config()
            self._spawn()
            try:
                self.wait_ready(timeout)
                return
            except TopologyNotReadyError:
                tail = self.log_tail()
                self.stop(graceful=False)
                ALLOCATOR.release(self.port)
                if attempt + 1 < attempts and any(s in tail for s in _BIND_FAILURES):
                    continue
                raise

    def restart(self, *, timeout: float = 20.0) -> None:
        """Start again on the same port with the same config (after :meth:`kill`)."""
        if self.running:
            raise TopologyError(f"{self.name} is still running; kill() it before restart()")
        self._spawn()
        self.wait_ready(timeout)

    def _write_config(self) -> None:
        settings: dict[str, str | int | None] = {
            "port": self.port,
            "bind": self.host,
            "dir": str(self.directory),
            "logfile": str(self.log_path),
            "daemonize": "no",
            "protected-mode": "no",
        }
        settings.update(self._settings)
        if self.sentinel:
            # Sentinel rewrites its own config; directives after "sentinel monitor" follow it.
            text = _config_text(
                {k: v for k, v in settings.items() if not k.startswith("sentinel ")}
            )
            text += _config_text({k: v for k, v in settings.items() if k.startswith("sentinel ")})
        else:
            text = _config_text(settings)
        self.config_path.write_text(text)

    def _spawn(self) -> None:
        argv = [str(self.binary.path), str(self.config_path)]
        if self.sentinel:
            argv.append("--sentinel")
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                argv,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - must run before exec
            )
        self.paused = False
        with _REGISTRY_LOCK:
            _REGISTRY[self._popen.pid] = self

    def client(self, **kwargs: Any) -> redis.Redis:
        """A plain redis-py client to this node (for the launcher's own admin commands)."""
        kwargs.setdefault("socket_timeout", 5.0)
        kwargs.setdefault("socket_connect_timeout", 2.0)
        # Fault tests want the node's answer now, not redis-py's retries with backoff.
        kwargs.setdefault("retry", Retry(NoBackoff(), 0))
        if self.password and not self.sentinel:
            kwargs.setdefault("password", self.password)
        return redis.Redis(host=self.host, port=self.port, **kwargs)

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until the process answers PING; raise with its last log lines if not."""

        def ping() -> bool:
            with self.client(socket_timeout=1.0, socket_connect_timeout=0.5) as c:
                return bool(c.ping())

        self.wait_for(ping, timeout, what="answer PING")

    def wait_for(self, predicate: Callable[[], bool], timeout: float, *, what: str) -> None:
        """Poll ``predicate`` until it is true; raise TopologyNotReadyError after ``timeout``."""
        deadline = time.monotonic() + timeout
        delay = 0.01
        last_error: Exception | None = None
        while True:
            if self._popen is not None and self._popen.poll() is not None:
                raise TopologyNotReadyError(
                    f"{self.name} ({self.address}) exited with code {self._popen.returncode} "
                    f"before it could {what}",
                    node=self.name,
                    log_tail=self.log_tail(),
                )
            try:
                if predicate():
                    return
            except (redis.RedisError, OSError) as exc:
                last_error = exc
            if time.monotonic() >= deadline:
                detail = f" (last error: {last_error})" if last_error else ""
                raise TopologyNotReadyError(
                    f"{self.name} ({self.address}) did not {what} within {timeout:.1f}s{detail}",
                    node=self.name,
                    log_tail=self.log_tail(),
                )
            time.sleep(delay)  # polling a server we do not control; no event to await
            delay = min(delay * 2, 0.1)

    # -- faults -------------------------------------------------------------------
    def kill(self) -> None:
        """SIGKILL the process (no shutdown, no save), and reap it."""
        if self._popen is None:
            return
        if self.paused:
            self.resume()
        with contextlib.suppress(ProcessLookupError):
            self._popen.send_signal(signal.SIGKILL)
        self._popen.wait(timeout=10)
        with _REGISTRY_LOCK:
            _REGISTRY.pop(self._popen.pid, None)

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets open and answers nothing."""
        if self._popen is None or not self.running:
            raise TopologyError(f"{self.name} is not running")
        self._popen.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self._popen is not None and self.running:
            self._popen.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self, *, graceful: bool = False) -> None:
        """Stop the process by PID (SIGTERM with ``graceful``, else SIGKILL) and reap it."""
        if self._popen is None:
            return
        if self.running:
            if graceful and not self.paused:
                self._popen.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._popen.wait(timeout=5)
            if self.running:
                self.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout=5)
        with _REGISTRY_LOCK:
            _REGISTRY.pop(self._popen.pid, None)
