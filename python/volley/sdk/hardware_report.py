"""A plain-text report of a worker's hardware and software, run remotely by
``Executor.get_worker_hardware_details`` / ``Client.get_worker_hardware_details``."""

from __future__ import annotations


def run_hardware_report(env_name: str | None = None) -> str:
    import os
    import platform
    import shutil
    import socket
    import sys

    def meminfo() -> str:
        try:
            with open("/proc/meminfo") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            return f"{fields['MemTotal'].strip()} total, {fields['MemAvailable'].strip()} available"
        except (OSError, KeyError):
            return "unknown"

    def cpu_model() -> str:
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return platform.processor() or "unknown"

    disk = shutil.disk_usage(os.getcwd())
    lines = [
        f"== Hardware report{f' ({env_name})' if env_name else ''} ==",
        f"hostname: {socket.gethostname()}",
        f"platform: {platform.platform()}",
        f"cpu: {cpu_model()}",
        f"logical cpus: {os.cpu_count()}",
        f"usable cpus: {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else 'unknown'}",
        f"memory: {meminfo()}",
        f"disk (cwd): {disk.free // 2**30} GiB free of {disk.total // 2**30} GiB",
        f"python: {sys.version.split()[0]} ({platform.python_implementation()}) at {sys.executable}",
        f"working directory: {os.getcwd()}",
    ]
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    if gpus is not None:
        lines.append(f"CUDA_VISIBLE_DEVICES: {gpus}")
    return "\n".join(lines)
