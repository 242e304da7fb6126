"""The lifecycle every private broker of the tests, the demo and the bench shares.

A broker is a child process with its own config file, data dir and port: started in its
own process group (a SIGKILL reaches the whole tree, e.g. RabbitMQ's start script and the
beam it runs), ready when its MQTT port accepts a connection, ``stop()`` = SIGTERM (a
clean shutdown: persistent sessions and retained messages are saved), ``kill()`` =
SIGKILL, ``restart()`` on the same port. Its stdout and stderr go to ``stdout.log`` in the
data dir, its own log to ``log_path``; ``log_tail()`` shows both in error messages.
Subclasses write their config and say how to run them (Mosquitto: sim.local_broker;
RabbitMQ, NATS: sim.other_brokers).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Self

from sim.ports import free_port


class BrokerProcess:
    """Shared process handling: start in its own process group, wait for the MQTT port."""

    kind = "?"
    protocols: tuple[str, ...] = ("3.1.1",)
    start_timeout = 10.0

    def __init__(self, port: int = 0, data_dir: str | os.PathLike[str] = "broker",
                 host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        self.data_dir = Path(data_dir).resolve()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / "broker.log"

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> tuple[list[str], dict[str, str]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def write_config(self) -> object:  # pragma: no cover - abstract
        raise NotImplementedError

    def start(self, timeout: float | None = None) -> Self:
        if self.running:
            return self
        timeout = self.start_timeout if timeout is None else timeout
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.write_config()
        argv, env = self.command()
        out = (self.data_dir / "stdout.log").open("ab")
        try:
            # own session: SIGKILL reaches the whole tree (RabbitMQ's start script + beam)
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         cwd=self.data_dir)
        finally:
            out.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise RuntimeError(f"{self.kind} exited with {code} on start: {self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"{self.kind} did not listen on {self.host}:{self.port} "
                                       f"within {timeout} s: {self.log_tail()}") from None
                time.sleep(0.05)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to the process group and wait (a clean shutdown: data is kept)."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        self._signal(signal.SIGKILL, 10.0)

    def restart(self, timeout: float | None = None) -> Self:
        self.stop()
        return self.start(timeout)

    def _signal(self, sig: int, timeout: float) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # the group may outlive its leader for a moment (beam after its start script)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        self.proc = None

    def log_tail(self, lines: int = 20) -> str:
        text = ""
        for path in (self.log_path, self.data_dir / "stdout.log"):
            with contextlib.suppress(OSError):
                text += "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text.strip()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
