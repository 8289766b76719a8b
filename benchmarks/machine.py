"""What the benchmarks record about the machine they ran on."""

import datetime
import importlib
import os
import platform

__all__ = ["environment"]


def environment(*modules):
    """Date, Python, platform, CPU model, cores, 1-minute load average, and the versions of
    pc_gpu, numpy and the named `modules`, as an ordered dict of strings."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    env = {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
           "platform": platform.platform(), "cpu": cpu, "cores": str(os.cpu_count()),
           "load average (1 min) at start": f"{os.getloadavg()[0]:.2f}"}
    for name in ("pc_gpu", "numpy", *modules):
        env[name] = importlib.import_module(name).__version__
    return env
