"""Run ``restore upscale`` in a fresh process, as a user does, and measure it: what ``restore bench
io`` (memory against clip length) and ``restore bench scale`` (1 process against N ranks) share.

``python -m cli`` rather than ``python -c``: Lightning starts the other DDP ranks by running the
same command line again, which needs a script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_upscale_process(inputs: Path, output: Path, options: list[str], *, env: dict[str, str] | None = None) -> dict:
    """``restore upscale INPUTS -o OUTPUT OPTIONS`` in a new process (with ``--report`` and ``-q``).

    Returns ``{"seconds": wall-clock seconds of the whole command (start-up included),
    "peak_rss_mb": peak resident memory of the job (the largest of its processes: ranks
    included), "report": its report (``restore.batch.BatchReport.as_dict``)}``; RuntimeError with
    the end of its stderr if it fails.
    """
    with tempfile.TemporaryDirectory() as tmp:
        report, stderr_path = Path(tmp) / "report.json", Path(tmp) / "stderr.txt"
        command = [sys.executable, "-m", "cli", "upscale", str(inputs), "-o", str(output), *options,
                   "--report", str(report), "-q"]
        with open(stderr_path, "w") as stderr:
            start = time.perf_counter()
            proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
            # wait4, not wait: the resource use of this child (and the ranks it waited for) alone
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"restore upscale {' '.join(options)} failed ({proc.returncode}): "
                               f"{stderr_path.read_text()[-2000:]}")
        return {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024, "report": json.loads(report.read_text())}
