"""``flowwarden worker``: a process that runs queued and orphaned runs of a durable store.

SIGTERM (or SIGINT) asks it to stop: it claims nothing more, lets each run (and each
Call Flow child running in it) finish the block it is in and checkpoint, and hands the
runs back for another worker; after the grace period (10 s) the rest are handed back
where they stand. Nothing is recorded CANCELLED because the worker stops.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys

import anyio

from blocks import BlockRegistry

from .._model.logs import get_logger, settle
from .._runtime.engine import Engine
from .._runtime.heap import settle_heap
from .._runtime.worker import NOTIFIED_POLL, POLL, Worker
from .._store import open_store
from .common import add_logging_options, env

__all__ = ["add_worker_command"]

MIN_LEASE = 1.0  # seconds: a shorter lease is renewed too often to be worth its writes


def add_worker_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = commands.add_parser(
        "worker",
        help="run queued runs of a durable store",
        description="Claim runs from a durable store (QUEUED ones, and RUNNING ones whose "
        "worker died) and run them, resuming each from its last checkpoint. SIGTERM "
        "finishes the blocks in flight and hands the runs back.",
    )
    store = env("FLOWWARDEN_STORE")
    worker.add_argument(
        "--store",
        metavar="URL",
        required=store is None,
        default=store,
        help="sqlite:///… or postgresql://… (env FLOWWARDEN_STORE)",
    )
    worker.add_argument("--concurrency", metavar="N", type=int, default=4, help="runs at once (4)")
    worker.add_argument(
        "--lease",
        metavar="SECONDS",
        type=float,
        default=30.0,
        help=f"claim length, at least {MIN_LEASE:g} (30)",
    )
    worker.add_argument(
        "--poll",
        metavar="SECONDS",
        type=float,
        default=None,
        help=f"queue poll interval ({POLL:g}; {NOTIFIED_POLL:g} on PostgreSQL, whose workers "
        "are notified when runs are queued)",
    )
    worker.add_argument(
        "--grace",
        metavar="SECONDS",
        type=float,
        default=10.0,
        help="on SIGTERM, how long blocks in flight may take before their runs are handed "
        "back where they stand (10)",
    )
    worker.add_argument("-v", "--verbose", action="count", default=0, help="log info events")
    add_logging_options(worker)
    worker.set_defaults(command=lambda args: anyio.run(_worker, args))


async def _worker(args: argparse.Namespace) -> int:
    try:
        store = open_store(args.store)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not store.durable:
        print(
            "error: a worker needs a durable store (sqlite:///… or postgresql://…)", file=sys.stderr
        )
        return 2
    if args.concurrency < 1:
        print("error: --concurrency must be at least 1", file=sys.stderr)
        return 2
    if not (math.isfinite(args.lease) and args.lease >= MIN_LEASE):
        print(f"error: --lease must be at least {MIN_LEASE:g} seconds", file=sys.stderr)
        return 2
    if not (math.isfinite(args.grace) and args.grace >= 0):
        print("error: --grace must be a number of seconds, 0 or more", file=sys.stderr)
        return 2
    if args.poll is not None and not (math.isfinite(args.poll) and args.poll > 0):
        print("error: --poll must be a positive number of seconds", file=sys.stderr)
        return 2
    log = get_logger("flowwarden.worker")
    registry = BlockRegistry.from_entry_points()
    settle()  # a plugin that imported structlog logs with the command's configuration
    async with Engine(store, registry=registry, lease=args.lease) as engine:
        worker = Worker(
            engine, concurrency=args.concurrency, poll_interval=args.poll, grace=args.grace
        )
        settle_heap()  # what start-up built lives as long as the worker
        async with anyio.create_task_group() as group:

            async def on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for received in signals:
                        log.warning("worker.stopping", signal=received.name)
                        worker.stop()
                        return

            group.start_soon(on_signal)
            print(f"worker {engine.owner} running ({args.concurrency} at once)", file=sys.stderr)
            await worker.run()
            group.cancel_scope.cancel()
        print(f"worker {engine.owner} stopped after {worker.claimed} runs", file=sys.stderr)
    return 0
