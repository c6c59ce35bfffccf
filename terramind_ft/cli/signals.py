"""What SIGTERM and SIGINT do (``timeout``, SLURM ``scancel``, Kubernetes and Ctrl-C send them).

* ``validate``/``test``/``predict`` (and ``generate``): stop at once, between two Python steps (a strip or
  a chip of a scene at most); the temp files of outputs being written are removed by
  :func:`terramind_ft.io.atomic_path`, complete outputs stay; the command exits with 128 + the signal number.
* ``fit``: stop at the next batch boundary, so that ``last.ckpt`` holds a whole optimiser step
  (:class:`terramind_ft.cli.checkpoints.LastCheckpoint` writes it), then exit with 128 + the signal number.
  A second Ctrl-C stops at once. Before the training loop runs there is nothing to save: it stops at once.

Lightning handles SIGTERM itself during ``fit`` (its ``SIGTERMException`` between batches); it keeps the
handler installed here in its chain, which is how the signal's number reaches the exit code.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from terramind_ft.cli.report import Interrupted

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _raise(signum: int, frame: Any) -> None:
    raise Interrupted(signum, "stopped before the end; complete outputs are kept, partial ones removed")


@contextmanager
def stop_at_once() -> Iterator[None]:
    """SIGTERM/SIGINT raise :class:`Interrupted` wherever the main thread is (inference commands)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class GracefulFitStop:
    """SIGTERM/SIGINT during ``fit``: ask the trainer to stop at the next batch boundary (see the module doc).

    Use as a context manager around ``trainer.fit``; ``received`` is the signal that stopped the run, if any.
    """

    def __init__(self, trainer: Any):
        self.trainer = trainer
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        from lightning.pytorch.trainer.states import TrainerFn, TrainerStatus

        first = self.received is None
        self.received = signum
        state = self.trainer.state
        running = (state.status == TrainerStatus.RUNNING and state.fn == TrainerFn.FITTING
                   and not self.trainer.sanity_checking)
        if not running or (signum == signal.SIGINT and not first):
            raise Interrupted(signum, "stopped before the training loop saved anything" if not running else
                              "stopped at once (second Ctrl-C); last.ckpt is the one of the last epoch end")
        # Lightning checks this flag between batches and raises its SIGTERMException (a SystemExit)
        self.trainer._signal_connector.received_sigterm = True

    def __enter__(self) -> GracefulFitStop:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
