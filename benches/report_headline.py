"""The page's headline (issue 14): the stack a user gets (``volley local up``) against Parsl's
HighThroughputExecutor, the ratios, the CPU per task per process, and the targets, met or not,
each computed from the run's JSON; for a target not met, the text names what holds it back,
from the same numbers.
"""

# ruff: noqa: RUF001  (the page is typeset: its multiplication, minus and dash signs are meant)
from __future__ import annotations

from typing import Any

from report_format import Run, at_least, at_most, headline, num, ratio, ratio_s, table, verdict

# Targets of issue 14 (the configuration `volley local up` writes; 2 cores).
T_PEER_RATIO = 5.0  # Volley default native ÷ Parsl HTEX, end to end
T_STRETCH_RATE = 10_000.0  # tasks/s
T_NATIVE_RATIO = 2.0  # native ÷ pika, end to end
T_P50_MS = 3.0
T_P99_MS = 10.0
T_INGEST_RATE = 100_000.0  # results/s into resolved futures

# (role key in the JSON, label): Volley's processes, then Parsl's
ROLES = [
    ("client", "client: this process (Volley's SDK / Parsl's DataFlowKernel)"),
    ("service", "Volley service"),
    ("broker", "RabbitMQ (`beam.smp`)"),
    ("endpoint", "Volley endpoint agent"),
    ("workers", "workers (the agent's / the manager's children)"),
    ("interchange", "Parsl interchange"),
    ("manager", "Parsl manager (`process_worker_pool.py`)"),
]
ROLE_NAMES = {"client": "the client", "service": "the service", "broker": "RabbitMQ",
              "endpoint": "the endpoint agent", "workers": "the workers",
              "interchange": "the interchange", "manager": "the manager"}


def _cores(run: Run) -> int:
    return int(run.machine.get("volley", {}).get("cpus") or 2)


def _config_s(e: dict[str, Any]) -> str:
    c = e.get("config") or {}
    pf = c.get("prefetch")
    return (f"`{c.get('engine', '?')}`, {c.get('max_workers', '?')} workers, "
            + ("default prefetch" if pf is None else f"`prefetch: {pf}`"))


def _total(cpu: dict[str, float] | None) -> float | None:
    return sum(cpu.values()) if cpu else None


def _top(cpu: dict[str, float] | None) -> tuple[str, float] | None:
    return max(cpu.items(), key=lambda kv: kv[1]) if cpu else None


def _share(cpu: dict[str, float] | None, unit: str = "µs", digits: int = 0) -> str:
    """ "RabbitMQ 420 µs (38 %)" for the process that dominates ``cpu``."""
    top, total = _top(cpu), _total(cpu)
    if top is None or not total:
        return "—"
    return f"{ROLE_NAMES.get(top[0], top[0])} {num(top[1], digits, unit)} ({top[1] / total:.0%})"


def _busy(rate: float | None, cpu: dict[str, float] | None) -> float | None:
    """Cores in use on average during a run: CPU per task x tasks per second."""
    total = _total(cpu)
    return None if rate is None or total is None else total * rate / 1e6


def section(run: Run) -> str:
    dn = run.extra("bench_default_stack[native]") or {}
    dp = run.extra("bench_default_stack[python]") or {}
    peer = run.extra("bench_parsl_htex") or {}
    tn, tp = headline(run, "native") or {}, headline(run, "python") or {}
    lat_tn, lat_tp = run.extra("bench_latency[native]") or {}, run.extra("bench_latency[python]") or {}
    cores = _cores(run)

    rate_n, rate_p, rate_peer = dn.get("tasks_per_s"), dp.get("tasks_per_s"), peer.get("tasks_per_s")
    lat_n, lat_p, lat_peer = dn.get("latency") or {}, dp.get("latency") or {}, peer.get("latency") or {}
    cpu_n, cpu_p, cpu_peer = dn.get("cpu_us_per_task"), dp.get("cpu_us_per_task"), peer.get("cpu_us_per_task")
    ingest = run.get("bench_ingest_futures[native]", "results_per_s")

    out = ["## Headline: the default configuration against Parsl HTEX\n"]
    if not dn:
        out.append("_The default-configuration benchmark (`bench_default_stack.py`) did not run._\n")
        return "\n".join(out)
    out.append(
        "The stack exactly as `volley local up` writes it (the endpoint's `config.yaml` untouched: "
        f"{_config_s(dn)}; SQLite), every program on one transport — *native* (Rust, lapin) or "
        "*pika* — against Parsl's `HighThroughputExecutor` "
        f"(Parsl {peer.get('parsl', '?')}, `{peer.get('executor', '?')}`, everything else at its "
        "defaults) on the same machine in the same run, the same no-op function. Tasks/s: N "
        "tasks submitted at once through `volley.Executor` (Parsl: the app called N times), "
        "clock from the first submit to the last resolved future, start-up excluded. Round "
        "trip: sequential `submit(noop).result()` on a warm executor. The tuned rows are §3's "
        "stacks (thread-pool endpoint, deep prefetch), for comparison.\n"
    )
    rows = [
        ["**Volley default, native**", _config_s(dn), num(dn.get("tasks")), f"**{num(rate_n)}**",
         num(lat_n.get("p50_ms"), 2, "ms"), num(lat_n.get("p99_ms"), 2, "ms")],
        ["Volley default, pika", _config_s(dp) if dp else "—", num(dp.get("tasks")), num(rate_p),
         num(lat_p.get("p50_ms"), 2, "ms"), num(lat_p.get("p99_ms"), 2, "ms")],
        ["**Parsl HTEX**", f"{peer.get('workers', '?')} workers, `LocalProvider`", num(peer.get("tasks")),
         f"**{num(rate_peer)}**", num(lat_peer.get("p50_ms"), 2, "ms"), num(lat_peer.get("p99_ms"), 2, "ms")],
    ]
    tuned = run.machine.get("volley", {}).get("endpoint", {})
    tuned_s = f"`{tuned.get('engine', '?')}`, {tuned.get('max_workers', '?')} workers, `prefetch: {tuned.get('prefetch', '?')}`"
    for label, e, lat in (("Volley tuned, native", tn, lat_tn), ("Volley tuned, pika", tp, lat_tp)):
        if e:
            rows.append([label, tuned_s, num(e.get("tasks")), num(e.get("tasks_per_s")),
                         num(lat.get("p50_ms"), 2, "ms"), num(lat.get("p99_ms"), 2, "ms")])
    nrt = lat_n.get("round_trips", "?")
    out.append(table(["", "configuration", "N", "tasks/s", f"round trip p50 ({nrt})", "p99"], rows) + "\n")

    # --- ratios
    out.append("### Ratios (same run)\n")
    rows = [
        ["Volley default native ÷ Parsl HTEX, tasks/s", ratio_s(rate_n, rate_peer)],
        ["Volley default pika ÷ Parsl HTEX, tasks/s", ratio_s(rate_p, rate_peer)],
        ["native ÷ pika, default configuration, tasks/s", ratio_s(rate_n, rate_p)],
        ["native ÷ pika, tuned, tasks/s", ratio_s(tn.get("tasks_per_s"), tp.get("tasks_per_s"))],
        ["tuned ÷ default, native, tasks/s", ratio_s(tn.get("tasks_per_s"), rate_n)],
        ["tuned ÷ default, pika, tasks/s", ratio_s(tp.get("tasks_per_s"), rate_p)],
        ["Parsl HTEX ÷ Volley default native, round trip p50 (time)", ratio_s(lat_peer.get("p50_ms"), lat_n.get("p50_ms"))],
    ]
    if tn.get("tasks") not in (None, dn.get("tasks")):
        rows.append(["(tuned runs used N = " + num(tn.get("tasks")) + ", the default ones N = "
                     + num(dn.get("tasks")) + ")", ""])
    out.append(table(["ratio", ""], rows) + "\n")

    # --- targets
    out.append("### Targets of issue 14\n")
    r_peer, r_nat = ratio(rate_n, rate_peer), ratio(rate_n, rate_p)
    p50, p99 = lat_n.get("p50_ms"), lat_n.get("p99_ms")
    checks = [
        ("end to end, Volley default native ÷ Parsl HTEX", f"≥ {T_PEER_RATIO:.0f}×", ratio_s(rate_n, rate_peer),
         at_least(r_peer, T_PEER_RATIO)),
        ("end to end, Volley default native (stretch)", f"≥ {T_STRETCH_RATE:,.0f} tasks/s", num(rate_n, 0, "tasks/s"),
         at_least(rate_n, T_STRETCH_RATE)),
        ("end to end, native ÷ pika (default configuration)", f"≥ {T_NATIVE_RATIO:.0f}×", ratio_s(rate_n, rate_p),
         at_least(r_nat, T_NATIVE_RATIO)),
        ("round trip p50, warm Executor (default, native)", f"≤ {T_P50_MS:.0f} ms", num(p50, 2, "ms"), at_most(p50, T_P50_MS)),
        ("round trip p99, warm Executor (default, native)", f"≤ {T_P99_MS:.0f} ms", num(p99, 2, "ms"), at_most(p99, T_P99_MS)),
        ("ingestion into resolved futures (native, §1)", f"≥ {T_INGEST_RATE:,.0f} results/s", num(ingest, 0, "results/s"),
         at_least(ingest, T_INGEST_RATE)),
    ]
    out.append(table(["target", "goal", "measured", ""], [[a, b, c, verdict(ok)] for a, b, c, ok in checks]) + "\n")
    met = sum(1 for *_, ok in checks if ok)
    out.append(f"{met} of {len(checks)} met. " + (
        "What holds back the others, measured in this run: the tables and the text below.\n"
        if met < len(checks) else "\n"))

    # --- CPU per task per process
    out.append("### CPU per task, per process\n")
    out.append(
        "Each process's user + system CPU time (psutil) during the measured window ÷ N: what a "
        f"task cost the machine's {cores} cores, process by process. Processes started during "
        "the window (a pool's workers) count from their start. *Cores busy* = all processes' "
        f"CPU per task × tasks/s: {cores:.0f} means the run was bound by CPU; well below, by "
        "waits (a hand-over, a bounded pipeline).\n"
    )
    cols = [("Volley default, native", cpu_n, rate_n), ("Volley default, pika", cpu_p, rate_p),
            ("Parsl HTEX", cpu_peer, rate_peer), ("Volley tuned, native", tn.get("cpu_us_per_task"), tn.get("tasks_per_s"))]
    cols = [c for c in cols if c[1]]
    rows = []
    for key, label in ROLES:
        if any(key in c[1] for c in cols):
            rows.append([label] + [num(c[1].get(key), 0, "µs") if key in c[1] else "—" for c in cols])
    rows.append(["**all processes**"] + [f"**{num(_total(c[1]), 0, 'µs')}**" for c in cols])
    rows.append(["cores busy during the run"] + [num(_busy(c[2], c[1]), 2) for c in cols])
    rows.append([f"ceiling if CPU-bound: {cores} cores ÷ all"]
                + [num(cores * 1e6 / t, 0, "tasks/s") if (t := _total(c[1])) else "—" for c in cols])
    rows.append(["measured"] + [num(c[2], 0, "tasks/s") for c in cols])
    out.append(table(["per task"] + [c[0] for c in cols], rows) + "\n")

    rt_cols = [("Volley default, native", lat_n), ("Volley default, pika", lat_p), ("Parsl HTEX", lat_peer)]
    rt_cols = [c for c in rt_cols if c[1].get("cpu_us_per_round_trip")]
    if rt_cols:
        rows = []
        for key, label in ROLES:
            if any(key in c[1]["cpu_us_per_round_trip"] for c in rt_cols):
                rows.append([label] + [num(c[1]["cpu_us_per_round_trip"].get(key), 0, "µs")
                                       if key in c[1]["cpu_us_per_round_trip"] else "—" for c in rt_cols])
        rows.append(["**all processes**"] + [f"**{num(_total(c[1]['cpu_us_per_round_trip']), 0, 'µs')}**" for c in rt_cols])
        rows.append(["mean round trip (wall)"] + [num(c[1].get("mean_ms", 0) * 1e3, 0, "µs") for c in rt_cols])
        rows.append(["… of which the submit request alone, p50"]
                    + [num(c[1]["submit_p50_ms"] * 1e3, 0, "µs") if "submit_p50_ms" in c[1] else "—" for c in rt_cols])
        out.append("CPU per sequential round trip (the latency run; 10 ms clock ticks, so ±"
                   f"{10_000 / max(1, int(lat_n.get('round_trips') or 1)):.0f} µs per process):\n")
        out.append(table(["per round trip"] + [c[0] for c in rt_cols], rows) + "\n")
    idle_cols = [(label, e.get("idle_cpu_ms_per_s")) for label, e in
                 (("Volley default, native", dn), ("Volley default, pika", dp)) if e.get("idle_cpu_ms_per_s")]
    if idle_cols:
        rows = [[label] + [num(c[1].get(key), 1, "ms") for c in idle_cols]
                for key, label in ROLES if any(key in c[1] for c in idle_cols)]
        rows.append(["**all processes**"] + [f"**{num(_total(c[1]), 1, 'ms')}**" for c in idle_cols])
        out.append("The same stacks idle (no tasks, 2 s, just before the round trips): CPU per second "
                   "of wall time, the background every figure above includes (10 ms clock ticks, so "
                   "±5 ms per process):\n")
        out.append(table(["idle, per second"] + [c[0] for c in idle_cols], rows) + "\n")

    out.append(_why(checks, dict(rate_n=rate_n, rate_p=rate_p, rate_peer=rate_peer, cpu_n=cpu_n, cpu_p=cpu_p,
                                 cpu_peer=cpu_peer, lat_n=lat_n, cores=cores, tn=tn,
                                 idle_n=dn.get("idle_cpu_ms_per_s"), load_n=dn.get("loadavg")), run))
    return "\n".join(out)


def _why(checks: list[tuple[str, str, str, bool | None]], f: dict[str, Any], run: Run) -> str:
    """One paragraph per target not met, from the numbers above."""
    missed = {label for label, _, _, ok in checks if ok is False}
    if not missed:
        return ""
    cores, cpu_n, rate_n = f["cores"], f["cpu_n"], f["rate_n"]
    out = ["### What holds the unmet targets back (computed from this run)\n"]
    total_n = _total(cpu_n)
    if any(k.startswith("end to end, Volley default native") for k in missed) and total_n and rate_n:
        busy = _busy(rate_n, cpu_n) or 0.0
        need_peer = None if not f["rate_peer"] else T_PEER_RATIO * f["rate_peer"]
        text = (f"**Throughput.** The default native stack ran {num(rate_n)} tasks/s using {busy:.2f} of "
                f"{cores} cores, {num(total_n, 0, 'µs')} of CPU per task; the process that dominates is "
                f"{_share(cpu_n)}. ")
        load = f["load_n"][0] if f.get("load_n") else None
        if busy < 0.8 * cores and load is not None and load > cores:
            text += (f"It used {busy / cores:.0%} of the cores, but the machine's load average was "
                     f"{load:.2f} on {cores} cores at the end of the run: other processes held cores "
                     "too, so this run cannot tell waiting for work from waiting for a core. ")
        elif busy < 0.8 * cores:
            text += (f"The stack was not CPU-bound ({busy / cores:.0%} of the cores): tasks waited — "
                     f"CPU alone would allow {num(cores * 1e6 / total_n)} tasks/s — so the default's "
                     "bounded pipeline (tasks held unacked at once ÷ the time from delivery to "
                     "ack) sets the pace before CPU does")
            tn_rate = (f["tn"] or {}).get("tasks_per_s")
            if tn_rate:
                text += f"; the tuned stack, with a deep prefetch, reached {num(tn_rate)} tasks/s"
            text += ". "
        else:
            text += f"The cores were saturated, so CPU per task is the limit: {num(cores * 1e6 / total_n)} tasks/s at most. "
        for target, label in ((need_peer, f"{T_PEER_RATIO:.0f}× Parsl HTEX ({num(need_peer)} tasks/s)"),
                              (T_STRETCH_RATE, f"{T_STRETCH_RATE:,.0f} tasks/s")):
            if target:
                budget = cores * 1e6 / target
                top = _top(cpu_n)
                over = [ROLE_NAMES.get(k, k) for k, v in sorted(cpu_n.items(), key=lambda kv: -kv[1]) if v > budget]
                text += (f"{label} needs at most {num(budget, 0, 'µs')} of CPU per task in all, "
                         f"{total_n / budget:.1f}× less than now"
                         + (f"; {', '.join(over)} alone spend{'s' if len(over) == 1 else ''} more than that"
                            if over else f"; the largest share, {ROLE_NAMES.get(top[0], top[0]) if top else '?'}, fits")
                         + ". ")
        if f["cpu_peer"]:
            text += (f"Parsl HTEX spent {num(_total(f['cpu_peer']), 0, 'µs')} per task, most in "
                     f"{_share(f['cpu_peer'])}. ")
        out.append(text + "\n")
    if any(k.startswith("end to end, native ÷ pika") for k in missed) and cpu_n and f["cpu_p"]:
        diff = {k: f["cpu_p"].get(k, 0.0) - cpu_n.get(k, 0.0) for k in cpu_n.keys() | f["cpu_p"].keys()}
        top_d = max(diff.items(), key=lambda kv: kv[1])
        out.append(
            f"**Native ÷ pika.** Per task, pika's stack spent {num(_total(f['cpu_p']), 0, 'µs')} of CPU "
            f"against native's {num(total_n, 0, 'µs')} ({ratio_s(_total(f['cpu_p']), total_n)}); the largest "
            f"difference is in {ROLE_NAMES.get(top_d[0], top_d[0])} (+{num(top_d[1], 0, 'µs')}). "
            f"Native's own largest share is {_share(cpu_n)}: whatever native saves in Volley's "
            f"processes, the ratio cannot exceed pika's total ÷ the part both pay alike. "
            + (f"Native used {(_busy(rate_n, cpu_n) or 0):.2f} of {cores} cores, pika "
               f"{(_busy(f['rate_p'], f['cpu_p']) or 0):.2f}: a stack that is not CPU-bound is paced by its "
               "pipeline, which is the same for both transports. " if f["rate_p"] else "")
            + "\n")
    lat = f["lat_n"]
    if any(k.startswith("round trip") for k in missed) and lat:
        rt = lat.get("cpu_us_per_round_trip") or {}
        mean_us = (lat.get("mean_ms") or 0) * 1e3
        total_rt = _total(rt)
        sub = lat.get("submit_p50_ms")
        text = (f"**Latency.** p50 {num(lat.get('p50_ms'), 2, 'ms')}, p99 {num(lat.get('p99_ms'), 2, 'ms')} "
                f"(mean {num(mean_us / 1e3, 2, 'ms')}). ")
        if sub is not None:
            text += (f"The submit request alone (HTTP; the service stores the task and publishes it "
                     f"with a confirm) took {num(sub, 2, 'ms')} at p50, "
                     f"{sub / lat['p50_ms']:.0%} of the p50 round trip. " if lat.get("p50_ms") else "")
        if total_rt:
            text += (f"A round trip cost {num(total_rt, 0, 'µs')} of CPU in all, most in {_share(rt)}"
                     + (f", {total_rt / mean_us:.0%} of its mean wall time (the processes run one "
                        "after another along a round trip, so what is not CPU is waiting: hand-overs "
                        "between threads and processes, commits, confirms, timers)" if mean_us else "")
                     + ". ")
            idle_total = _total(f.get("idle_n"))
            if idle_total and mean_us:
                bg = idle_total * mean_us / 1e3  # ms per s x µs -> µs
                text += (f"Idle, the same stack used {num(idle_total, 1, 'ms')} of CPU per second, most in "
                         f"{_share(f['idle_n'], 'ms', 1)}: about {num(bg, 0, 'µs')} of each round "
                         "trip's CPU is that background. ")
        load = run.machine.get("volley", {}).get("loadavg_at_start")
        if load and load[0] > cores:
            text += (f"The machine's load average was {load[0]:.2f} on {cores} cores at the start: "
                     "every wake-up waited for a core, which inflates p99 most. ")
        out.append(text + "\n")
    if any(k.startswith("ingestion") for k in missed):
        busy = run.get("bench_ingest_futures[native]", "broker_busy")
        b = run.get("bench_ingest_futures[native]", "broker_cpu_us_per_result")
        c = run.get("bench_ingest_futures[native]", "client_cpu_us_per_result")
        if b is not None and c is not None:
            dom = "RabbitMQ" if b >= c else "the client"
            out.append(
                f"**Ingestion.** Per result, RabbitMQ spent {num(b, 1, 'µs')} of CPU and the client "
                f"{num(c, 1, 'µs')}: {dom} dominates. "
                + (f"The broker was busy {busy:.2f} of the wall time, so one broker core delivers at "
                   f"most 1 ÷ {num(b, 1, 'µs')} ≈ {num(1e6 / b)} results/s to one queue; "
                   f"{T_INGEST_RATE:,.0f} results/s needs at most {num(1e6 / T_INGEST_RATE, 1, 'µs')} "
                   "of broker CPU per result (fewer broker messages per result). "
                   if busy is not None and b else "")
                + "See §1.\n")
    return "\n".join(out)
