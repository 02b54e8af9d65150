"""Write one benchmark's section of benchmarks/RESULTS.md, leaving the others as they are."""

from __future__ import annotations

import datetime
import os
import platform
import re
from pathlib import Path

import torch

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = (
    "# Benchmark results\n\n"
    "Each section is written by the script it names (side by side with the peer in one run;\n"
    "ratios below 1.0 mean densenets is faster). Re-run a script to refresh its section.\n"
)


def proc_status_mib(field: str) -> float:
    """A memory field of this process's `/proc/self/status` (Linux), e.g. "VmHWM" (peak
    resident set size; reset by exec, unlike `ru_maxrss`), in MiB."""
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    if match is None:
        raise RuntimeError(f"/proc/self/status: no {field} field (peak memory on CPU needs Linux)")
    return int(match.group(1)) / 1024


def machine() -> str:
    """One line describing where the numbers came from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {gpu}, {datetime.date.today().isoformat()}"
    )


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section delimited by `<!-- bench:name -->` markers."""
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)
