"""Child processes, for the load tester, the benchmarks and the tests alike: a free port to give
one, a core to pin it to, the CPU time it used, and ``ChildProcess``, which starts one, waits until
it is ready (or says why it never was) and stops it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that nothing listens on now (TCP, or UDP with ``SOCK_DGRAM``)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(core: int | None, command: list[str]) -> list[str]:
    """``command`` under ``taskset -c core`` when there is a core to spare."""
    if core is not None and shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(core), *command]
    return command


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and all its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def udp_answers(port: int, request: bytes, good: Callable[[bytes], bool] = bool, timeout: float = 0.2) -> bool:
    """Whether a datagram sent to 127.0.0.1:``port`` gets a ``good`` answer within ``timeout``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(request, ("127.0.0.1", port))
            return good(sock.recv(2048))
        except OSError:
            return False


class ChildProcessFailed(RuntimeError):
    pass


class ChildProcess:
    """One child process: started, polled until it is ready, stopped (a signal, then SIGKILL).

    ``output``: where its standard output and error go: a file (appended to, so that it survives
    restarts), ``subprocess.DEVNULL``, or None (this process's own); ``stdout_pipe`` keeps its
    standard output apart, in a pipe, for the caller to read.  ``log``: the file whose end says
    why it failed (``output`` when that is a file; a program may write its own)."""

    def __init__(
        self, command: list[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
        output: Path | int | None = None, log: Path | None = None, stdout_pipe: bool = False,
    ) -> None:
        self.command = command
        self.env = env
        self.cwd = cwd
        self.output = output
        self.log = log if log is not None or not isinstance(output, Path) else output
        self.stdout_pipe = stdout_pipe
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Launch it and wait until it is ready (see ``wait_ready``)."""
        self.launch()
        self.wait_ready(ready, timeout, what)

    def launch(self) -> None:
        sink = open(self.output, "ab") if isinstance(self.output, Path) else self.output  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                self.command, env=self.env, cwd=self.cwd,
                stdout=subprocess.PIPE if self.stdout_pipe else sink, stderr=sink,
            )
        finally:
            if isinstance(self.output, Path):
                sink.close()

    def wait_ready(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``ready()``; raise ``ChildProcessFailed`` (with the end of its log) if the process
        exits first, or if ``timeout`` seconds pass (it is stopped then)."""
        deadline = time.monotonic() + timeout
        while not ready():
            if not self.running:
                raise ChildProcessFailed(f"{what} exited with status {self.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise ChildProcessFailed(f"{what} was not ready within {timeout:.0f} s: {self.log_tail()}")
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.process.returncode if self.process is not None else None

    def logged(self) -> str:
        """Everything in its log so far."""
        return self.log.read_text(errors="replace") if self.log is not None and self.log.exists() else ""

    def log_tail(self, chars: int = 2000) -> str:
        return self.logged()[-chars:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        """Send ``sig`` and wait ``timeout`` seconds, then kill it; its exit status."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.returncode

    def kill(self) -> None:
        """SIGKILL: no goodbye to anyone, as when its host fails."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            if self.process.stdout is not None:
                self.process.stdout.close()
