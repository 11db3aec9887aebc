"""Write docs/benchmarks.md and docs/benchmarks-throughput.png from one benchmark run.

Inputs: pytest-benchmark's ``--benchmark-json`` file and criterion's estimates under
``<target>/criterion``.  Every figure on the page comes from those files; the analysis text is a
template filled with the same numbers, so a new run rewrites it consistently.

    python benches/report.py --json target/bench/python.json --criterion target/criterion \\
        --out docs/benchmarks.md --png docs/benchmarks-throughput.png
"""

# ruff: noqa: RUF001  (the page is typeset: its multiplication, minus and dash signs are meant)
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from report_format import (
    Run,
    at_least,
    at_most,
    curve,
    headline,
    num,
    ratio,
    ratio_s,
    table,
    verdict,
)
from report_headline import T_PEER_RATIO
from report_headline import section as headline_section

# Targets of issue #7, on this 2-core class of machine.
T_INGEST_RATIO = 3.0
T_INGEST_OF_RAW = 0.80
T_CALLER_US = 5.0
T_CPU_US = 20.0
T_E2E_RATE = 5000.0
T_E2E_RATIO = 1.5
T_UPSTREAM_RATIO = 10.0
T_P50_MS = 5.0
T_BYTES_PER_FUTURE = 1024.0
UPSTREAM_CPU_US = 60.0  # the figure for upstream's client CPU per task


@dataclass
class CriterionResult:
    id: str
    median_ns: float
    low_ns: float
    high_ns: float
    elements: int | None
    bytes: int | None


def read_criterion(root: Path) -> list[CriterionResult]:
    out = []
    for est in sorted(root.glob("**/new/estimates.json")):
        meta_path = est.parent / "benchmark.json"
        if not meta_path.exists():
            continue
        meta = json.loads(meta_path.read_text())
        median = json.loads(est.read_text())["median"]
        thr = meta.get("throughput") or {}
        out.append(CriterionResult(
            id=meta.get("full_id") or meta.get("title") or str(est.parent.parent),
            median_ns=median["point_estimate"],
            low_ns=median["confidence_interval"]["lower_bound"],
            high_ns=median["confidence_interval"]["upper_bound"],
            elements=thr.get("Elements"),
            bytes=thr.get("Bytes"),
        ))
    return out


def cost(us: float | None) -> str:
    if us is None:
        return "—"
    return num(us, 2, "µs") if us >= 0 else "n/a (raw drain slower, see analysis)"


def duration(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


# --- the page ------------------------------------------------------------------------------------

def plot(run: Run, png: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for transport, label, style in (("native", "tuned, native (Rust, lapin)", "o-"), ("python", "tuned, pika", "s--")):
        pts = curve(run, transport)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
    for name, label, style in (("bench_default_stack[native]", "Volley default config, native", "D"),
                               ("bench_default_stack[python]", "Volley default config, pika", "d"),
                               ("bench_parsl_htex", "Parsl HTEX, 2 workers", "*")):
        e = run.extra(name)
        if e and "tasks_per_s" in e:
            ax.plot([e["tasks"]], [e["tasks_per_s"]], style, markersize=8, label=label)
    up = run.extra("bench_upstream_executor")
    if up and "tasks_per_s" in up:
        ax.plot([up["tasks"]], [up["tasks_per_s"]], "^", color="gray", label="upstream Executor (on our native stack)")
    ax.axhline(T_E2E_RATE, color="tab:red", lw=0.8, ls=":", label=f"issue #7: {T_E2E_RATE:,.0f} tasks/s (tuned)")
    peer = (run.extra("bench_parsl_htex") or {}).get("tasks_per_s")
    if peer:
        ax.axhline(T_PEER_RATIO * peer, color="tab:purple", lw=0.8, ls="--",
                   label=f"issue 14: {T_PEER_RATIO:.0f}× Parsl HTEX (default)")
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ticks = sorted({n for t in ("native", "python") for n, _ in curve(run, t)})
    if ticks:
        ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("no-op tasks submitted at once")
    ax.set_ylabel("tasks/s (first submit → last result)")
    ax.set_title("End to end: tuned stacks (lines), default stacks and Parsl HTEX (points)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)
    return True


def machine_section(run: Run) -> str:
    m = run.machine
    v = m.get("volley", {})
    c = run.data.get("commit_info", {})
    load = v.get("loadavg_at_start")
    rows = [
        ["CPU", f"{v.get('cpu_model', m.get('cpu', {}).get('brand_raw', '?'))}, {v.get('cpus', '?')} logical cores"],
        ["memory", f"{v.get('memory_gib', '?')} GiB"],
        ["OS", f"{m.get('system', '?')} {v.get('kernel', m.get('release', '?'))}"],
        ["load average at start (1/5/15 min)", " / ".join(f"{x:.2f}" for x in load) if load else "?"],
        ["commit", f"{c.get('id', '?')[:12]}{' (uncommitted changes)' if c.get('dirty') else ''}"],
        ["run", f"{run.data.get('datetime', '?')}, mode **{v.get('mode', '?')}**"],
    ]
    versions = [[k, str(val)] for k, val in v.get("versions", {}).items()]
    ep = v.get("endpoint", {})
    return "\n\n".join([
        table(["machine", ""], rows),
        table(["component", "version"], versions),
        f"Endpoint of the tuned stacks (§1–§6): `{ep.get('engine', '?')}` with {ep.get('max_workers', '?')} "
        f"workers, `prefetch: {ep.get('prefetch', '?')}`; the headline's default stacks keep the "
        "`config.yaml` that `volley local up` writes.",
    ])


def build(run: Run, crit: list[CriterionResult], png_name: str | None) -> str:
    mode = run.machine.get("volley", {}).get("mode", "?")
    g = run.get
    out: list[str] = []
    out.append("# Benchmarks\n")
    out.append(
        "Generated by `make bench` (`benches/`, see `benches/README.md`) from one run of the committed "
        "code: every figure below, both transports side by side, Parsl's HighThroughputExecutor as "
        "the peer, the upstream anchors and the criterion micro-benchmarks come from the same run. "
        "Nothing here is a pass/fail test. The headline is the configuration a user gets "
        "(`volley local up`), with the targets of issue 14; §1–§6 measure the parts (and the tuned "
        "stacks) against the targets of issue #7, for this 2-core class of machine.\n"
    )
    if mode == "quick":
        out.append(
            "> **Quick mode** (`make bench QUICK=1`): every count is scaled down 3 to 10× "
            "(see the tables for N) and each throughput is measured once, so the figures are "
            "indicative only; the committed page should come from a full `make bench` on a quiet "
            "machine.\n"
        )
    load = run.machine.get("volley", {}).get("loadavg_at_start")
    if load and load[0] > 1.0:
        out.append(
            f"> The machine was not idle: load average {load[0]:.2f} at the start of the run on "
            f"{run.machine.get('volley', {}).get('cpus', '?')} cores. Rates are lower and noisier "
            "than on a quiet machine; ratios between transports measured back to back hold up better.\n"
        )
    out.append(headline_section(run))
    out.append("## Machine and versions\n")
    out.append(machine_section(run) + "\n")

    # --- figures used by several sections
    ing_n = g("bench_ingest_futures[native]", "results_per_s")
    ing_p = g("bench_ingest_futures[python]", "results_per_s")
    raw_n = g("bench_raw_drain[native]", "results_per_s")
    raw_p = g("bench_raw_drain[python]", "results_per_s")
    caller_n = g("bench_submit[native]", "caller_us_per_submit")
    caller_p = g("bench_submit[python]", "caller_us_per_submit")
    cpu_n = g("bench_submit[native]", "cpu_us_per_task")
    cpu_p = g("bench_submit[python]", "cpu_us_per_task")
    mem_n = g("bench_submit[native]", "rss_bytes_per_future")
    mem_p = g("bench_submit[python]", "rss_bytes_per_future")
    hn, hp = headline(run, "native"), headline(run, "python")
    e2e_n = None if hn is None else hn.get("tasks_per_s")
    e2e_p = None if hp is None else hp.get("tasks_per_s")
    p50_n, p99_n = g("bench_latency[native]", "p50_ms"), g("bench_latency[native]", "p99_ms")
    p50_p, p99_p = g("bench_latency[python]", "p50_ms"), g("bench_latency[python]", "p99_ms")
    up = run.extra("bench_upstream_executor") or {}
    up_rate = up.get("tasks_per_s")
    up_n = up.get("tasks")
    native_at_up_n = next((r for n, r in curve(run, "native") if n == up_n), None) if up_n else None
    cmp_native = native_at_up_n if native_at_up_n is not None else e2e_n
    py_cost = None
    if ing_n and raw_n:
        py_cost = 1e6 / ing_n - 1e6 / raw_n  # negative when the raw drain came out slower

    # --- summary
    out.append("## Targets of issue #7 (tuned stacks)\n")
    rows = [
        ["ingestion: native ÷ pika (results/s)", f"≥ {T_INGEST_RATIO:.0f}×", ratio_s(ing_n, ing_p),
         verdict(at_least(ratio(ing_n, ing_p), T_INGEST_RATIO))],
        ["ingestion: native futures ÷ native raw drain", f"≥ {T_INGEST_OF_RAW:.0%}",
         "—" if ratio(ing_n, raw_n) is None else f"{ratio(ing_n, raw_n):.0%}",
         "**inconclusive**: the raw drain came out slower (see analysis)"
         if (ratio(ing_n, raw_n) or 0) > 1.0 else verdict(at_least(ratio(ing_n, raw_n), T_INGEST_OF_RAW))],
        ["submission: caller time per `submit()` (native)", f"≤ {T_CALLER_US:.0f} µs", num(caller_n, 2, "µs"),
         verdict(at_most(caller_n, T_CALLER_US))],
        ["submission: client CPU per task (native)",
         f"≤ {T_CPU_US:.0f} µs (upstream: "
         + (f"{g('bench_upstream_submit', 'cpu_us_per_task'):.0f} µs measured)" if g("bench_upstream_submit", "cpu_us_per_task") is not None
            else f"≈ {UPSTREAM_CPU_US:.0f} µs)"),
         num(cpu_n, 1, "µs"), verdict(at_most(cpu_n, T_CPU_US))],
        ["end to end: native tasks/s", f"≥ {T_E2E_RATE:,.0f}", num(e2e_n), verdict(at_least(e2e_n, T_E2E_RATE))],
        ["end to end: native ÷ pika", f"≥ {T_E2E_RATIO}×", ratio_s(e2e_n, e2e_p),
         verdict(at_least(ratio(e2e_n, e2e_p), T_E2E_RATIO))],
        ["end to end: native ÷ upstream Executor (same stack, same N)", f"≥ {T_UPSTREAM_RATIO:.0f}×",
         ratio_s(cmp_native, up_rate), verdict(at_least(ratio(cmp_native, up_rate), T_UPSTREAM_RATIO))],
        ["latency p50 (native, loopback)", f"≤ {T_P50_MS:.0f} ms", num(p50_n, 2, "ms"), verdict(at_most(p50_n, T_P50_MS))],
        ["memory per outstanding future (native)", "≤ 1 KiB", num(mem_n, 0, "B"),
         verdict(at_most(mem_n, T_BYTES_PER_FUTURE))],
    ]
    out.append(table(["target", "goal", "measured", ""], rows) + "\n")
    out.append("Why the unmet ones are out of reach, measured in this run: see [Analysis](#analysis).\n")

    # --- 1 ingestion
    n_ing = int(g("bench_ingest_futures[native]", "results") or 0)
    rounds = int(g("bench_ingest_futures[native]", "rounds") or 1)
    out.append("## 1. Result ingestion\n")
    out.append(
        f"{n_ing:,} packed `Result`s already in a task group's queue (the SDK user's queue on the "
        "native stack's broker, read with the credentials the service hands out), as the router "
        "forwards them to Volley's SDK: result batches of 1,000 (*one result per message*: as "
        "upstream SDKs get them) → resolved "
        "futures, through the SDK's real `ResultWatcher` (decode, match, `deserialize`, "
        "`set_result`); the clock includes connecting. *Raw drain*: the same queue read by a bare "
        "consumer of the same transport with the watcher's batch size and ack policy, no futures. "
        f"Median of {rounds} round(s) each. CPU columns: the broker's and this process's CPU time "
        "per result during the run; *broker busy* is the broker's CPU time ÷ wall time (1.0 = one "
        "core saturated).\n"
    )

    def ing_row(label: str, name: str, key: str, digits: int = 0, unit: str = "") -> list[str]:
        a, b = g(f"{name}[native]", key), g(f"{name}[python]", key)
        return [label, num(a, digits, unit), num(b, digits, unit), ratio_s(a, b)]

    rows = [
        ing_row("futures resolved per second", "bench_ingest_futures", "results_per_s"),
        ing_row("raw drain, results per second", "bench_raw_drain", "results_per_s"),
        ing_row("futures resolved per second, one result per message", "bench_ingest_futures_single",
                "results_per_s"),
        ing_row("… broker CPU per result, one result per message", "bench_ingest_futures_single",
                "broker_cpu_us_per_result", 1, "µs"),
        ["futures ÷ raw drain", "—" if ratio(ing_n, raw_n) is None else f"{ratio(ing_n, raw_n):.0%}",
         "—" if ratio(ing_p, raw_p) is None else f"{ratio(ing_p, raw_p):.0%}", ""],
        ["Python-side cost per result (1/futures − 1/raw)", cost(py_cost),
         cost(None if not (ing_p and raw_p) else 1e6 / ing_p - 1e6 / raw_p), ""],
        ing_row("mean results per consumer batch (futures run)", "bench_ingest_futures", "mean_batch", 0),
        ing_row("mean results per consumer batch (raw drain)", "bench_raw_drain", "mean_batch", 0),
        ing_row("client CPU per result (futures run)", "bench_ingest_futures", "client_cpu_us_per_result", 1, "µs"),
        ing_row("client CPU per result (raw drain)", "bench_raw_drain", "client_cpu_us_per_result", 1, "µs"),
        ing_row("broker CPU per result (futures run)", "bench_ingest_futures", "broker_cpu_us_per_result", 1, "µs"),
        ing_row("broker busy (futures run)", "bench_ingest_futures", "broker_busy", 2),
    ]

    def spread(name: str) -> str:
        rates = (run.extra(name) or {}).get("rates_per_s") or []
        return f"{num(min(rates))} – {num(max(rates))}" if rates else "—"

    rows.insert(2, ["… slowest – fastest round (futures)", spread("bench_ingest_futures[native]"),
                    spread("bench_ingest_futures[python]"), ""])
    rows.insert(3, ["… slowest – fastest round (raw drain)", spread("bench_raw_drain[native]"),
                    spread("bench_raw_drain[python]"), ""])
    out.append(table(["", "native", "pika", "native ÷ pika"], rows) + "\n")
    out.append("Each round fills the queue anew and waits until the broker has gone quiet (under 5 % "
               "of a core) before the clock starts. At this size RabbitMQ's own pace still varies "
               "from round to round (its message store compacts the files acked messages leave "
               "behind, at moments of its choosing), hence the median and the spread.\n")

    # --- 2 submission
    n_sub = int(g("bench_submit[native]", "tasks") or 0)
    out.append("## 2. Submission\n")
    out.append(
        f"{n_sub:,} `submit()` calls of a registered function with small arguments "
        "(`echo(i, label=\"x\")`), in a fresh process per transport, to an endpoint that is "
        "registered but not running (the native stack's service). *Caller time*: the wall time "
        "of the `submit()` loop ÷ N. *Client CPU*: the process's CPU time, all threads, from the "
        "first `submit()` until the service has acknowledged every batch (every future has its "
        "task id) ÷ N. The transport is the SDK's result stream; the HTTP path is the same.\n"
    )
    rows = [
        ["caller time per `submit()`", num(caller_n, 2, "µs"), num(caller_p, 2, "µs"), ratio_s(caller_n, caller_p)],
        ["client CPU per task", num(cpu_n, 1, "µs"), num(cpu_p, 1, "µs"), ratio_s(cpu_n, cpu_p)],
        ["tasks acknowledged per second (service-bound)", num(g("bench_submit[native]", "submitted_per_s")),
         num(g("bench_submit[python]", "submitted_per_s")), ""],
        ["tasks per HTTP submission", num(g("bench_submit[native]", "mean_batch"), 1),
         num(g("bench_submit[python]", "mean_batch"), 1), ""],
    ]
    by_thread = {t: (run.extra(f"bench_submit[{t}]") or {}).get("cpu_us_per_task_by_thread", {})
                 for t in ("native", "python")}
    labels = {"MainThread": "caller's thread (`submit()`, plus the probe's 5 ms polling)",
              "TaskSubmitter": "submitter thread (grouping)",
              "volley-submit": "sender threads (serialize + HTTP)",
              "volley-results": "result watcher thread"}
    for key, label in labels.items():
        a, b = by_thread["native"].get(key), by_thread["python"].get(key)
        if a is not None or b is not None:
            rows.append([f"CPU per task: {label}", num(a, 1, "µs"), num(b, 1, "µs"), ""])
    rows.append(["… of which the HTTP layer (`http.client`, JSON), per task", num(g("bench_submit[native]", "http_cpu_us_per_task"), 1, "µs"),
                 num(g("bench_submit[python]", "http_cpu_us_per_task"), 1, "µs"), ""])
    rows.append(["… the HTTP layer per submission request", num(g("bench_submit[native]", "http_cpu_ms_per_request"), 2, "ms"),
                 num(g("bench_submit[python]", "http_cpu_ms_per_request"), 2, "ms"), ""])
    out.append(table(["", "native", "pika", "native ÷ pika"], rows) + "\n")
    out.append("Per-thread CPU comes from `/proc/self/task/*/stat` (10 ms ticks); the HTTP figure "
               "from `time.thread_time()` around each request.\n")

    # --- 3 end to end
    out.append("## 3. End to end, tuned stacks\n")
    out.append(
        "No-op tasks through a whole local stack per transport (SDK, service and endpoint all on "
        "that transport; SQLite; thread-pool endpoint, deep prefetch: see the headline for the "
        "default configuration). Tasks/s: from the first `submit()` to the "
        "last resolved future, all submitted at once. Latency: sequential `submit(noop).result()` "
        "round trips on a warm Executor.\n"
    )
    rows = []
    ns = sorted({n for n, _ in curve(run, "native")} | {n for n, _ in curve(run, "python")})
    cn, cp = dict(curve(run, "native")), dict(curve(run, "python"))
    for n in ns:
        rows.append([f"{n:,} tasks, tasks/s", num(cn.get(n)), num(cp.get(n)), ratio_s(cn.get(n), cp.get(n))])
    nlat = int(g("bench_latency[native]", "round_trips") or 0)
    for q in ("p50", "p90", "p99", "submit_p50"):
        a, b = g("bench_latency[native]", f"{q}_ms"), g("bench_latency[python]", f"{q}_ms")
        label = (f"latency {q} ({nlat} round trips)" if q != "submit_p50" else
                 "of which: the submit request alone, p50 (service stores + publishes)")
        rows.append([label, num(a, 2, "ms"), num(b, 2, "ms"),
                     f"{ratio_s(b, a)} (pika ÷ native)" if a and b else "—"])
    e2e_cpu_n = (headline(run, "native") or {}).get("cpu_us_per_task") or {}
    e2e_cpu_p = (headline(run, "python") or {}).get("cpu_us_per_task") or {}
    if e2e_cpu_n or e2e_cpu_p:
        for key, label in (("broker", "RabbitMQ"), ("service", "service"), ("endpoint", "endpoint"),
                           ("client", "SDK (this process)")):
            rows.append([f"CPU per task, headline run: {label}", num(e2e_cpu_n.get(key), 0, "µs"),
                         num(e2e_cpu_p.get(key), 0, "µs"), ""])
        tn, tp = sum(e2e_cpu_n.values()) or None, sum(e2e_cpu_p.values()) or None
        rows.append(["CPU per task, headline run: all processes", num(tn, 0, "µs"), num(tp, 0, "µs"), ""])
    out.append(table(["", "native", "pika", "native ÷ pika"], rows) + "\n")
    if e2e_cpu_n:
        out.append("CPU per task: each process's user + system time (psutil) over the headline run "
                   "÷ N, so what the machine's two cores paid per task (the thread-pool endpoint has "
                   "no worker processes; see the headline's table for the default stacks).\n")
    if png_name:
        out.append(f"![throughput vs number of tasks: tuned and default stacks, both transports, Parsl HTEX]({png_name})\n")
    dp = run.extra("bench_default_prefetch")
    if dp:
        out.append(
            f"**Default endpoint prefetch.** The same no-op tasks ({dp.get('tasks', 0):,}) through a "
            f"native stack whose endpoint keeps its default `prefetch` ({dp.get('prefetch', '?')}): "
            f"**{num(dp.get('tasks_per_s'))} tasks/s**, against {num(e2e_n)} with `prefetch: "
            f"{run.machine.get('volley', {}).get('endpoint', {}).get('prefetch', '?')}`. See the analysis.\n"
        )

    # --- 4 memory
    out.append("## 4. Memory per outstanding future\n")
    out.append(
        f"RSS growth of the submitting process (§2) from before the loop to after it, with all "
        f"{n_sub:,} futures outstanding (acknowledged by the service and watched; the endpoint "
        "never runs them), after `gc.collect()`, ÷ N. RSS includes the allocator's slack, so it "
        "is an upper bound of what the objects need.\n"
    )
    def mib(name: str) -> str:
        v = g(name, "rss_growth_bytes")
        return num(None if v is None else v / 2**20, 1, "MiB")

    out.append(table(["", "native", "pika"], [
        ["bytes per outstanding future", num(mem_n, 0, "B"), num(mem_p, 0, "B")],
        ["total RSS growth", mib("bench_submit[native]"), mib("bench_submit[python]")],
    ]) + "\n")

    # --- 5 upstream anchors
    out.append("## 5. Upstream anchors\n")
    out.append(
        "Measured in the same run with `globus-compute-sdk` / `globus-compute-common` installed in "
        "the bench environment only (Volley's runtime never imports them).\n"
    )
    dn, dpy, du = (g(f"bench_decode[{w}]", "us_per_result") for w in ("volley-native", "volley-python", "upstream"))
    sv, su = g("bench_serialize_task[volley]", "us_per_task"), g("bench_serialize_task[upstream]", "us_per_task")
    up_cpu = g("bench_upstream_submit", "cpu_us_per_task")
    rows = [
        ["decode one packed `Result`", f"{num(dn, 2, 'µs')} (Rust) / {num(dpy, 2, 'µs')} (Python)",
         f"{num(du, 2, 'µs')} (`messagepack.unpack`)", f"{ratio_s(du, dn)} / {ratio_s(du, dpy)}"],
        ["serialize one task's arguments (`ComputeSerializer`)", num(sv, 2, "µs"), num(su, 2, "µs"), ratio_s(su, sv)],
        [f"end to end, {int(up_n or 0):,} no-op tasks on our native stack, tasks/s", num(cmp_native),
         f"{num(up_rate)} (upstream `Executor`)", ratio_s(cmp_native, up_rate)],
        ["client CPU per submitted task (§2's method)", num(cpu_n, 1, "µs"),
         num(up_cpu, 1, "µs") if up_cpu is not None else f"≈ {UPSTREAM_CPU_US:.0f} µs (issue's figure; not measured in this run)",
         ratio_s(up_cpu if up_cpu is not None else UPSTREAM_CPU_US, cpu_n)],
        ["caller time per `submit()` (§2's method)", num(caller_n, 2, "µs"), num(g("bench_upstream_submit", "caller_us_per_submit"), 2, "µs"),
         ratio_s(g("bench_upstream_submit", "caller_us_per_submit"), caller_n)],
    ]
    out.append(table(["", "Volley", "upstream", "upstream ÷ Volley (time) / Volley ÷ upstream (rate)"], rows) + "\n")

    # --- 6 criterion
    out.append("## 6. Rust micro-benchmarks (criterion)\n")
    if crit:
        out.append("`cargo bench --bench codec --bench batching`; median and its 95 % interval per iteration.\n")
        rows = []
        for r in crit:
            thr = "—"
            if r.elements:
                thr = f"{r.elements / (r.median_ns / 1e9):,.0f} elem/s"
                if r.elements > 1:
                    thr += f" ({duration(r.median_ns / r.elements)} each)"
            elif r.bytes:
                thr = f"{r.bytes / (r.median_ns / 1e9) / 2**20:,.0f} MiB/s"
            rows.append([f"`{r.id}`", duration(r.median_ns), f"{duration(r.low_ns)} – {duration(r.high_ns)}", thr])
        out.append(table(["benchmark", "median", "95 % interval", "throughput"], rows) + "\n")
    else:
        out.append("_No criterion results found._\n")

    # --- profile
    prof = (run.extra("bench_e2e_profile") or {}).get("profiles")
    out.append("## Where the time goes (py-spy, same run)\n")
    if prof:
        pe = run.extra("bench_e2e_profile") or {}
        out.append(
            f"A separate run of {int(pe.get('tasks', 0)):,} no-op tasks on the native stack, sampled "
            "with `py-spy record --gil --nonblocking`: only the thread holding the GIL is sampled, "
            "so the shares say where each process's Python CPU goes (native threads — tokio, "
            "lapin — and waits with the GIL released are not counted; §3's CPU per task counts "
            "everything). *threads* says which threads held the GIL.\n"
        )
        for proc in ("service", "endpoint", "client"):
            p = prof.get(proc)
            if not p:
                continue
            out.append(f"**{proc}** ({p['samples']} samples holding the GIL)\n")
            rows = []
            self_rows, incl_rows, thr_rows = p.get("self", [])[:8], p.get("inclusive", [])[:8], p.get("threads", [])[:5]
            for i in range(max(len(self_rows), len(incl_rows))):
                a = self_rows[i] if i < len(self_rows) else None
                b = incl_rows[i] if i < len(incl_rows) else None
                rows.append([f"{a[1]:.0%} `{a[0]}`" if a else "", f"{b[1]:.0%} `{b[0]}`" if b else ""])
            out.append(table(["self time (leaf frames)", "inclusive (Volley's frames)"], rows) + "\n")
            if thr_rows:
                out.append("busy threads: " + ", ".join(f"`{t.split(': ', 1)[-1]}` {s:.0%}" for t, s in thr_rows) + "\n")
    else:
        out.append("_Not profiled in this run (install py-spy in the bench environment to enable)._\n")

    out.append(analysis(run, dict(ing_n=ing_n, ing_p=ing_p, raw_n=raw_n, raw_p=raw_p, py_cost=py_cost,
                                  caller_n=caller_n, cpu_n=cpu_n, mem_n=mem_n, e2e_n=e2e_n, e2e_p=e2e_p,
                                  up_rate=up_rate, cmp_native=cmp_native, p50_n=p50_n, p99_n=p99_n,
                                  p50_p=p50_p, p99_p=p99_p, dp=dp)))
    out.append(abi3_note())
    out.append(reproduce())
    return "\n".join(out)


def analysis(run: Run, f: dict[str, Any]) -> str:
    g = run.get
    out = ["## Analysis\n"]
    busy_n = g("bench_ingest_futures[native]", "broker_busy")
    busy_p = g("bench_ingest_futures[python]", "broker_busy")
    b_cpu = g("bench_ingest_futures[native]", "broker_cpu_us_per_result")
    c_cpu_n = g("bench_ingest_futures[native]", "client_cpu_us_per_result")
    c_cpu_p = g("bench_ingest_futures[python]", "client_cpu_us_per_result")
    r = ratio(f["ing_n"], f["ing_p"])
    batch_f = g("bench_ingest_futures[native]", "mean_batch")
    batch_r = g("bench_raw_drain[native]", "mean_batch")
    text = (
        f"Native resolves {num(f['ing_n'])} results/s, pika {num(f['ing_p'])} ({ratio_s(f['ing_n'], f['ing_p'])}). "
        f"During the native run the broker was busy {num(busy_n, 2)} of the wall time and spent "
        f"{num(b_cpu, 1, 'µs')} of CPU per result delivered (TLS, AMQP framing, a durable classic "
        f"queue of persistent messages), against {num(c_cpu_n, 1, 'µs')} per result in the client "
        "(tokio threads decoding off the GIL plus the Python thread resolving); with pika the "
        f"client needed {num(c_cpu_p, 1, 'µs')} per result (the broker was busy {num(busy_p, 2)}). "
    )
    if busy_n is not None and busy_p is not None and busy_n > 0.8 and busy_p > 0.8:
        text += (
            f"Both runs were broker-bound (busy {num(busy_n, 2)} and {num(busy_p, 2)}): at this "
            "queue size RabbitMQ delivered at the same pace to either consumer, so the rates "
            "measure the broker, and the consumers differ only in what they spent per result — "
            f"{num(c_cpu_n, 1, 'µs')} native against {num(c_cpu_p, 1, 'µs')} pika "
            f"({ratio_s(c_cpu_n, c_cpu_p)}). (In the quick runs made while this was built, 20,000 "
            "results in the queue, the broker spent about half as much per delivery and native "
            "resolved 1.4–2.9× pika's rate.) "
        )
    if busy_n is not None and busy_n > 0.8 and (r is None or r < T_INGEST_RATIO):
        text += (
            "The native consumer is limited by the broker, not by Volley: one broker core delivers "
            "at most about 1 ÷ (broker CPU per result), so native can beat pika by at most about "
            "(pika's client CPU) ÷ (broker CPU) per result on this machine, which is where the "
            f"{T_INGEST_RATIO:.0f}× target falls short. Raising it needs a broker that delivers "
            "faster (more cores for RabbitMQ, or cheaper messages on the SDK queue), not a faster "
            "consumer. "
        )
    if f["py_cost"] is not None and f["py_cost"] >= 0:
        text += (
            f"The Python-side cost per result (futures vs raw drain) is {num(f['py_cost'], 2, 'µs')}: "
            "matching, `ComputeSerializer.deserialize` (dill: about 2 µs for a small value) and "
            "`Future.set_result`. "
        )
    elif f["py_cost"] is not None:
        text += (
            "The raw drain came out *slower* than the watcher, so no Python-side cost can be read "
            f"off this run. Its batches were smaller ({num(batch_r)} deliveries per `next_batch` "
            f"against {num(batch_f)} for the watcher): a loop that keeps up is woken for each small "
            "chunk of deliveries as the broker's frames arrive (the Rust consumer hands over "
            "whatever lapin has ready and notifies once per chunk), and each wake-up, GIL "
            "hand-over and `next_batch` call costs more than the watcher's per-result work on a "
            "loaded 2-core machine, where the watcher, being slower per call, finds larger "
            "batches waiting. A short coalescing wait in the native consumer before waking a "
            "waiter would help the bare loop; the watcher does not need it. "
        )
    out.append("**Ingestion.** " + text + "\n")
    http_us = g("bench_submit[native]", "http_cpu_us_per_task")
    http_ms = g("bench_submit[native]", "http_cpu_ms_per_request")
    out.append("**Submission.** " + (
        f"`submit()` costs the caller {num(f['caller_n'], 2, 'µs')} and the process "
        f"{num(f['cpu_n'], 1, 'µs')} of CPU per task in all. The caller's figure is wall time: "
        "the submitter and sender threads share the GIL with the caller, so while a burst is "
        "being sent, whatever they spend per task shows up in it too; on its own (no sender "
        "running) `submit()` took about 4 µs during development on this machine. With 100,000 "
        "futures outstanding, Python's cyclic GC also walks the growing heap: the same loop took "
        "3.0–3.5 µs per call with the GC disabled and 6–12 µs with it on, measured during this "
        "work; an outstanding future is now one object the GC tracks (it was four: the waiter "
        "and callback lists are made on first use, a batch's futures share one metadata dict). "
        + (f"The HTTP layer costs {num(http_us, 1, 'µs')} per task, {num(http_ms, 2, 'ms')} of CPU "
           "per 128-task request (`http.client` on kept-alive connections, JSON); with `requests` "
           "(session, urllib3) it was ≈ 1.1 ms per such request, 8.3 µs per task, in the previous "
           "committed run of this page. " if http_us is not None else "")
        + "What this SDK no longer spends per task (measured during development at N = 100,000 against one "
          "stack, before → after: client CPU 42 → 22 µs, caller 30 → 8 µs, memory 2.7 → 0.97 KiB per future): a "
          "`threading.Condition` per future (made on first use now), a done-callback and a set "
          "entry per future in the Executor (shutdown waits on the watchers' futures instead), "
          "a frozen dataclass per task, `json.dumps` of absent settings, `deepcopy(None)`, and "
          "re-parsing the function's UUID per task.\n"
    ))
    out.append("**Memory.** " + (
        f"{num(f['mem_n'], 0, 'B')} per outstanding future, RSS: the future and its attributes, "
        "the task id string and a slot in the watcher's table, plus the allocator slack left by "
        "the short-lived objects of submission. What a `concurrent.futures.Future` makes in "
        "`__init__` — a condition (≈ 1.2 KiB: an RLock, a deque, five bound methods) and two "
        "lists — is made on first use, and a batch's futures share one `_metadata` dict.\n"
    ))
    e2e_n, e2e_p, up = f["e2e_n"], f["e2e_p"], f["up_rate"]
    cpu = (headline(run, "native") or {}).get("cpu_us_per_task") or {}
    cpu_all = sum(cpu.values()) or None
    dp = f["dp"] or {}
    prof = (run.extra("bench_e2e_profile") or {}).get("profiles") or {}
    svc = prof.get("service", {})
    svc_top = ", ".join(f"`{k}` {v:.0%}" for k, v in svc.get("inclusive", [])[:4])
    ep_top = ", ".join(f"`{k}` {v:.0%}" for k, v in prof.get("endpoint", {}).get("inclusive", [])[:4])
    out.append("**End to end.** " + (
        f"Native: {num(e2e_n)} tasks/s; pika: {num(e2e_p)} ({ratio_s(e2e_n, e2e_p)}). "
        "Each no-op task crosses the broker three times with publisher confirms (service → "
        "endpoint, endpoint → service's `results` queue, service → SDK queue), is written to "
        "SQLite twice (submit, result) and runs `execute_task` (deserialize, sandbox directory "
        "checks, serialize) on the endpoint. "
        + (f"The machine is CPU-bound: per task it spent {num(cpu_all, 0, 'µs')} of CPU in all — "
           f"RabbitMQ {num(cpu.get('broker'), 0, 'µs')}, the service {num(cpu.get('service'), 0, 'µs')}, "
           f"the endpoint {num(cpu.get('endpoint'), 0, 'µs')}, the SDK {num(cpu.get('client'), 0, 'µs')} "
           f"— and two cores allow at most 2 s ÷ that ≈ {num(2e6 / cpu_all)} tasks/s. "
           f"{T_E2E_RATE:,.0f} tasks/s would need at most {num(2e6 / T_E2E_RATE, 0, 'µs')} per task "
           f"in all, of which the broker's three persistent, confirmed hops per task alone take "
           f"{num((cpu.get('broker') or 0) / (2e6 / T_E2E_RATE) * 100)} %. " if cpu_all else "")
        + "What bounds the stack on two cores is the service and the endpoint, both Python "
        "processes sharing the cores with the broker"
        + (f"; in the profile the service's busiest Volley frames are {svc_top}, the endpoint's {ep_top}" if svc_top else "")
        + ". The pika stack pays a confirm round trip per message on every publish "
          "(pika's `BlockingConnection` confirms one message at a time), which is why native ÷ pika "
          "is largest end to end. "
        + (f"Upstream's Executor against the same stack reached {num(up)} tasks/s: the stack, not "
           "the SDK, sets the pace for both, so the "
           f"{T_UPSTREAM_RATIO:.0f}× target cannot be shown on a shared stack that runs at "
           f"{num(f['cmp_native'])} tasks/s; upstream's own costs (0.5 s result matching, serial "
           "128-task batches) show at small N and in latency. " if up else "")
        + (f"With the endpoint's default `prefetch` ({dp.get('prefetch', '')}) the stack managed "
           f"{num(dp.get('tasks_per_s'))} tasks/s: a task's delivery stays unacked until its "
           "result is confirmed by the broker (nothing is lost if the endpoint dies), so at most "
           "`prefetch` tasks are between the broker and a confirmed result at any moment, and the "
           "rate is about prefetch ÷ (the time from delivery to the ack: execution, the result's "
           "publish and confirm, and the task loop's ≤ 5 ms wait before it acks). A no-op "
           "workload needs a deep prefetch to keep the pipeline full; real tasks, which run for "
           "longer than that, do not. " if dp else "")
    ) + "\n")
    sub = g("bench_latency[native]", "submit_p50_ms")
    sub_cpu = g("bench_latency[native]", "submit_client_cpu_ms")
    out.append("**Latency.** " + (
        f"p50 {num(f['p50_n'], 2, 'ms')} / p99 {num(f['p99_n'], 2, 'ms')} native, "
        f"p50 {num(f['p50_p'], 2, 'ms')} / p99 {num(f['p99_p'], 2, 'ms')} pika. "
        + (f"The submit request alone (HTTP; the service stores the task and publishes it with a "
           f"confirm) takes {num(sub, 2, 'ms')} at p50, of which {num(sub_cpu, 2, 'ms')} is the "
           "client's own CPU (building the batch, HTTP, JSON), so the rest of the round trip, "
           f"{num(None if f['p50_n'] is None else f['p50_n'] - sub, 2, 'ms')}, is the endpoint, the "
           "result's two hops through the service and the SDK's resolution. " if sub is not None else "")
        + "A round trip is one "
        "HTTP request, three broker hops of persistent messages with publisher confirms, two "
        "SQLite commits (synchronous=FULL) and the endpoint's execution, across four processes "
        "that hand each message from thread to thread; every hand-over is a wake-up, which on "
        "a busy 2-core machine costs tens to hundreds of µs. "
        + (f"The {T_P50_MS:.0f} ms p50 target is missed by {num(f['p50_n'] - T_P50_MS, 2, 'ms')}. "
           "Taken off the path during this work (each measured): the SDK's `requests` (≈ 0.5 ms "
           "of client CPU per request), two thread-pool hand-overs per request in the service's "
           "auth dependency, a queue declare per submission, and the result router's ORM work. "
           if f["p50_n"] is not None and f["p50_n"] > T_P50_MS else "")
    ) + "\n")
    return "\n".join(out)


def abi3_note() -> str:
    """Not measured by this run: the A/B made when the wheel moved to the stable ABI."""
    return (
        "## abi3\n\n"
        "The wheel is built against CPython's stable ABI (pyo3's `abi3-py310`): one "
        "`volley-*-cp310-abi3-*.whl` serves CPython 3.10 and every later version. Measured when "
        "the switch was made (3.11, the same machine, both builds `--release`, run alternately "
        "three times each, best of 7 × 20,000 calls): `decode` of a packed `Result` 1.38–1.45 µs "
        "before, 1.31–1.38 µs abi3; `pack_result` 0.26–0.35 / 0.26–0.29 µs; `pack_task` "
        "0.22–0.33 / 0.21–0.22 µs; the eight `Message` getters 0.23–0.25 / 0.24–0.25 µs; "
        "`pack_result` of a 200 kB payload (GIL released) 119–123 / 93–96 µs. Quick-mode "
        "ingestion (20,000 results; broker-bound on a shared machine, so the rates, 14,000–27,000 "
        "results/s, measure the broker) cost the native client 19–25 µs of CPU per resolved "
        "future before and 17–18 µs abi3, 12–17 / 12–14 µs per result for the raw drain. "
        "Nothing measurable was lost: the module's calls move strings and bytes, which the "
        "limited API handles with the same C functions; the faster large pack has no "
        "abi3-specific cause we could find and may be noise.\n"
    )


def reproduce() -> str:
    return (
        "## Reproduce\n\n"
        "```sh\n"
        "make bench            # full sizes (the issues' N, 20,000 tasks end to end)\n"
        "make bench QUICK=1    # 3 to 10x smaller, about 4 to 5 minutes on 2 cores\n"
        "```\n\n"
        "`make bench` runs `make setup` (with the `bench` extra), the criterion benches, the "
        "Python benches (`pytest -c benches/pytest.ini benches`, pytest-benchmark JSON in "
        "`target/bench/`) and this report. Every stack and broker the run starts is stopped at "
        "the end, also on failure.\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", required=True, type=Path)
    ap.add_argument("--criterion", type=Path, default=Path("target/criterion"))
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    ap.add_argument("--png", type=Path, default=Path("docs/benchmarks-throughput.png"))
    a = ap.parse_args()
    run = Run(json.loads(a.json.read_text()))
    crit = read_criterion(a.criterion) if a.criterion.exists() else []
    png_ok = plot(run, a.png)
    png_name = a.png.name if png_ok and a.png.parent.resolve() == a.out.parent.resolve() else (str(a.png) if png_ok else None)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(build(run, crit, png_name))
    print(f"[bench] wrote {a.out}" + (f" and {a.png}" if png_ok else " (no plot: matplotlib missing)"))


if __name__ == "__main__":
    main()
