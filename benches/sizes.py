"""How much work each benchmark does: the issue's sizes, or a quick mode (``QUICK=1``).

Quick mode scales every count down (3 to 10x) so that ``make bench QUICK=1`` finishes
in about 4 to 5 minutes on two cores; the report says which mode produced it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    mode: str
    ingest_results: int  # results already queued, per transport and per measurement
    ingest_rounds: int  # measurements of each; the report uses the median rate
    submit_tasks: int  # submit() calls (and outstanding futures for the memory figure)
    e2e_tasks: int  # the headline end-to-end runs: the default stacks, Parsl, the tuned stacks
    e2e_curve: tuple[int, ...]  # task counts of the throughput-vs-N plot (headline included)
    latency_round_trips: int
    default_prefetch_tasks: int  # tasks through an endpoint left at its default prefetch
    upstream_e2e_tasks: int
    endpoint_workers: int = 4  # the tuned stacks' thread pool
    peer_workers: int = 2  # Parsl HTEX's max_workers_per_node (issue 14's peer)


FULL = Sizes(
    mode="full",
    ingest_results=200_000,
    ingest_rounds=5,  # the broker's own pace varies from round to round at this size
    submit_tasks=100_000,
    e2e_tasks=20_000,
    e2e_curve=(1_000, 5_000, 20_000),
    latency_round_trips=300,
    default_prefetch_tasks=1_000,
    upstream_e2e_tasks=20_000,
)

QUICK = Sizes(
    mode="quick",
    ingest_results=20_000,
    ingest_rounds=1,
    submit_tasks=30_000,  # fewer leave the RSS-per-future figure to noise
    e2e_tasks=4_000,
    e2e_curve=(500, 4_000),
    latency_round_trips=100,
    default_prefetch_tasks=200,
    upstream_e2e_tasks=4_000,
)


def current() -> Sizes:
    return QUICK if os.environ.get("QUICK", "").strip() not in ("", "0") else FULL
