"""Reading a benchmark run's JSON and typesetting its numbers: shared by report.py and the
sections it imports (report_headline.py)."""

# ruff: noqa: RUF001  (the page is typeset: its multiplication, minus and dash signs are meant)
from __future__ import annotations

from collections.abc import Iterable
from typing import Any


# --- reading -------------------------------------------------------------------------------------
class Run:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.by_name = {b["name"]: b for b in data.get("benchmarks", [])}

    def extra(self, name: str) -> dict[str, Any] | None:
        b = self.by_name.get(name)
        return None if b is None else b.get("extra_info", {})

    def get(self, name: str, key: str) -> float | None:
        e = self.extra(name)
        v = None if e is None else e.get(key)
        return float(v) if isinstance(v, int | float) else None

    def matching(self, prefix: str) -> Iterable[tuple[str, dict[str, Any]]]:
        for name, b in self.by_name.items():
            if name.startswith(prefix):
                yield name, b.get("extra_info", {})

    @property
    def machine(self) -> dict[str, Any]:
        return self.data.get("machine_info", {})


def headline(run: Run, transport: str) -> dict[str, Any] | None:
    """The tuned stack's headline end-to-end run on ``transport`` (else its largest N)."""
    best = None
    for _, e in run.matching(f"bench_e2e_throughput[{transport}-"):
        if e.get("headline"):
            return e
        if best is None or e.get("tasks", 0) > best.get("tasks", 0):
            best = e
    return best


def curve(run: Run, transport: str) -> list[tuple[int, float]]:
    pts = [(int(e["tasks"]), float(e["tasks_per_s"]))
           for _, e in run.matching(f"bench_e2e_throughput[{transport}-") if "tasks_per_s" in e]
    return sorted(pts)


# --- formatting ----------------------------------------------------------------------------------
def num(v: float | None, digits: int = 0, unit: str = "") -> str:
    if v is None:
        return "—"
    s = f"{v:,.{digits}f}"
    return f"{s} {unit}".rstrip()


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def ratio_s(a: float | None, b: float | None) -> str:
    r = ratio(a, b)
    return "—" if r is None else f"{r:.2f}×"


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("**met**" if ok else "**not met**")


def at_least(v: float | None, target: float) -> bool | None:
    return None if v is None else v >= target


def at_most(v: float | None, target: float) -> bool | None:
    return None if v is None else v <= target


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
