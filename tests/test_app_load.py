"""A bounded load test of the demo: 20 clients on 127.0.0.1, three rounds, ends by itself.

It shows the queue stays bounded, nothing fails except "queue full" refusals, the server's memory
stays flat and the page keeps answering while the device is busy.
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gradio_client
import httpx
import psutil
import pytest

from app import DemoConfig, launch

CLIENTS = 20
ROUNDS = 3
MAX_QUEUE = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_demo_under_load_stays_bounded(tmp_path):
    config = DemoConfig(workdir=tmp_path / "demo", device="cpu", max_queue=MAX_QUEUE)
    ui = launch("127.0.0.1", _free_port(), config=config, prevent_thread_lock=True, quiet=True)
    demo, url = ui.restore_demo, ui.local_url
    example = str(Path(config.workdir) / "examples" / "astronaut.png")
    clients = [gradio_client.Client(url, verbose=False) for _ in range(CLIENTS)]
    done = threading.Event()
    queue_sizes: list[int] = []
    page_seconds: list[float] = []

    def watch() -> None:
        with httpx.Client(timeout=30) as http:
            while not done.is_set():
                queue_sizes.append(sum(len(q.queue) for q in ui._queue.event_queue_per_concurrency_id.values()))
                start = time.monotonic()
                assert http.get(url).status_code == 200
                page_seconds.append(time.monotonic() - start)
                done.wait(0.2)

    def one_client(client) -> str:
        try:
            slider, _, _ = client.predict(gradio_client.handle_file(example), "bicubic", 2, api_name="/image")
            return "ok"
        except Exception as exc:  # noqa: BLE001 - every failure is classified below
            return str(exc)

    process = psutil.Process()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    results, rss = [], []
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            for _ in range(ROUNDS):
                results += list(pool.map(one_client, clients))
                rss.append(process.memory_info().rss)
    finally:
        done.set()
        watcher.join(timeout=30)
        for client in clients:
            client.close()
        ui.close()
    refused = [r for r in results if r != "ok"]
    assert all("queue is full" in r.lower() for r in refused), sorted(set(refused))
    assert results.count("ok") >= ROUNDS, "some jobs ran in every round"
    assert refused, f"{CLIENTS} clients at once overflow a queue of {MAX_QUEUE}"
    assert max(queue_sizes) <= MAX_QUEUE
    assert max(page_seconds) < 5.0, "the page answers while the device is busy"
    # memory after the first round (imports, caches warm) stays flat: jobs run in the worker process
    assert rss[-1] - rss[0] < 150 * 2**20, [r >> 20 for r in rss]
    assert demo.worker.busy is False
