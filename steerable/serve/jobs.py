"""One generation at a time on one dedicated thread, with a way to stop it between decode steps.

Every request becomes a `Job`. Jobs run in arrival order on a single worker thread (the model is not
thread-safe, and one long-lived thread keeps torch's thread pool warm instead of meeting a new pool per
request). A forward pre-hook on the network's token embeddings checks the running job before each forward pass, so a
generation stops within one decode step when its deadline passes, its client goes away or the server shuts
down, whatever engine loop is calling the model (in-process engines: vLLM's own workers are not watched).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch


def input_embeddings(network: torch.nn.Module) -> list[torch.nn.Module]:
    """The token embeddings every forward pass starts with (wrappers such as PEFT's call the inner model's
    own generate, so a hook on the outer module would never run)."""
    found = [m for m in network.modules() if isinstance(m, torch.nn.Embedding)]
    if not found:
        raise ValueError(f"{type(network).__name__} has no token embedding to watch")
    return found


class GenerationStopped(Exception):
    """Raised inside the model's forward pass to end a generation early; `reason` says why."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(eq=False)  # hashed by identity: jobs live in a set
class Job:
    deadline_s: float
    started: float | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    why: str = "the client went away"

    def cancel(self, why: str) -> None:
        self.why = why
        self.cancelled.set()

    def check(self) -> None:
        if self.cancelled.is_set():
            raise GenerationStopped(self.why, 503)
        if self.started is not None and time.monotonic() - self.started > self.deadline_s:
            raise GenerationStopped(
                f"the generation passed its deadline limits.deadline_s={self.deadline_s:g} s; ask for fewer "
                "settings.max_new_tokens or start steerable-serve with a longer limits.deadline_s=",
                504,
            )


class Worker:
    """A bounded queue in front of one generation thread. `capacity` counts the running job too."""

    def __init__(self, network: torch.nn.Module, capacity: int) -> None:
        self.capacity = capacity
        self.pending: set[Job] = set()
        self.running: Job | None = None
        self.stopping = False
        self.recent_seconds = 1.0  # a running mean of generation times, for Retry-After
        threads = (
            torch.get_num_threads()
        )  # the configured count (hardware.torch_threads), set on the thread too
        self.executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="steerable-generate", initializer=torch.set_num_threads,
            initargs=(threads,),
        )  # fmt: skip
        self.hooks = [m.register_forward_pre_hook(self._check_running) for m in input_embeddings(network)]

    def _check_running(self, module: torch.nn.Module, args: Any) -> None:
        job = self.running
        if job is not None and threading.current_thread().name.startswith("steerable-generate"):
            job.check()

    def full(self) -> bool:
        return len(self.pending) >= self.capacity

    def retry_after(self) -> int:
        return max(1, round(self.recent_seconds * max(1, len(self.pending))))

    def submit(self, job: Job, work: Callable[[], Any]) -> Future:
        """Queue `work`; it is skipped if `job` is cancelled before its turn. Call from the event loop."""
        self.pending.add(job)

        def run() -> Any:
            job.check()  # cancelled while waiting: never starts
            if self.stopping:
                raise GenerationStopped("the server is shutting down", 503)
            job.started = time.monotonic()
            self.running = job
            try:
                return work()
            finally:
                self.running = None
                self.recent_seconds = 0.7 * self.recent_seconds + 0.3 * (time.monotonic() - job.started)

        future = self.executor.submit(run)
        future.add_done_callback(lambda _: self.pending.discard(job))
        return future

    async def wait(self, future: Future) -> Any:
        return await asyncio.wrap_future(future)

    def stop(self) -> None:
        """Shutting down: the running generation ends at its next decode step, queued ones never start."""
        self.stopping = True
        for job in list(self.pending):
            job.cancel("the server is shutting down")
        self.executor.shutdown(wait=False, cancel_futures=True)
