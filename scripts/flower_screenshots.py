"""Screenshots of Flower watching a running corral fleet, for the README (real headless browser).

Starts a private Redis, the simulator (the example config's four models, 0.3-1.5 s a call),
three workers (two on every model's queue with the threads pool, one on gevent for two
models), `corral flower`, and submits the packaged demo batch (1,200 lines). Once the fleet
is busy it opens Flower in headless Chromium (playwright, driving the system's chromium:
`apt-get install chromium`, `pip install -e '.[screenshots]'`; no browser download) and saves:

- docs/images/flower-workers.png: the Workers page;
- docs/images/flower-tasks.png: the Tasks page, slowest first, with each task's result
  summary (model, outcome, tokens, cost);
- docs/images/flower-worker.png: one worker's page (pool, queues, processed counts).

Run from the repository root:  python scripts/flower_screenshots.py [--out docs/images]
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
import tempfile
import time
import tomllib
from importlib import resources
from pathlib import Path

import httpx

from corral.config import example_config_text, parse_config
from corral.embedded_redis import EmbeddedRedis
from producer.local_stack import SIM_READY, ChildProcess, worker_command

USER, PASSWORD = "admin", secrets.token_hex(8)
FLOWER_READY = re.compile(rb"Visit me at (http://[\d.]+:\d+)")
EXAMPLE_BASE_URL = "http://127.0.0.1:8100/v1"
WORKERS = [  # (name, queues of these models, pool, slots)
    ("alpha", None, "threads", 16),
    ("bravo", None, "threads", 16),
    ("charlie", ["gpt-5.4", "deepseek-v3.2"], "gevent", 64),
]
VIEWPORT = {"width": 1600, "height": 900}
# The Tasks page's columns (Flower's --tasks_columns): what a job did, where and how long.
TASK_COLUMNS = "state,args,result,runtime,worker"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright  # an optional tool, not a dependency

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="corral-screens-"))
    key = secrets.token_hex(16)
    children: list[ChildProcess] = []
    with EmbeddedRedis() as redis_server:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")},
               "CORRAL_REDIS_URL": redis_server.url, "CORRAL_GATEWAY_KEY": key,
               "CORRAL_SPOOL_DIR": str(work / "spool"), "CORRAL_FLOWER_REFRESH_S": "2",
               "FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}", "PYTHONUNBUFFERED": "1"}
        try:
            config = write_config(work, env, key, children)
            env["CORRAL_CONFIG"] = str(config)
            models = parse_config(tomllib.loads(config.read_text())).models
            for name, wanted, pool, slots in WORKERS:
                queues = sorted(model.queue for model in models.values()
                                if wanted is None or model.name in wanted)
                children.append(ChildProcess(name, worker_command(
                    queues=queues, concurrency=slots, name=name, pool=pool), env, work))
            for child in children[1:]:  # the workers (the simulator is first)
                child.wait_for(re.compile(rb"\bready\b"))
            flower = ChildProcess("flower", [
                sys.executable, "-m", "producer", "flower", "--port", "0", "--address",
                "127.0.0.1", f"--tasks_columns={TASK_COLUMNS}"], env, work)
            children.append(flower)
            base_url = flower.wait_for(FLOWER_READY).group(1).decode()
            submit_demo(work, env)
            time.sleep(6)  # the fleet busy, Flower's worker list refreshed
            with sync_playwright() as playwright:
                shoot(playwright, args.chromium, base_url, args.out)
        finally:
            for child in reversed(children):
                child.stop()
    print(f"screenshots in {args.out}", file=sys.stderr)
    return 0


def write_config(work: Path, env: dict[str, str], key: str,
                 children: list[ChildProcess]) -> Path:
    """Start the simulator with the example config's models; write the config pointing to it."""
    text = example_config_text()
    models = parse_config(tomllib.loads(text)).models.values()
    sim_args = ["--api-key", key, "--latency-ms", "900", "--latency-jitter-ms", "600"]
    for model in models:
        sim_args += ["--model", f"{model.upstream}:rpm={model.rpm},tpm={model.tpm},"
                                f"ctx={model.context_window},max_tokens={model.default_max_tokens}"]
    sim = ChildProcess("simulator", [sys.executable, "-m", "simulator", "--port", "0",
                                     *sim_args], env, work)
    children.append(sim)
    base_url = sim.wait_for(SIM_READY).group(1).decode()
    config = work / "corral.toml"
    config.write_text(text.replace(EXAMPLE_BASE_URL, f"{base_url}/v1"), encoding="utf-8")
    return config


def submit_demo(work: Path, env: dict[str, str]) -> None:
    """Submit the packaged demo batch (1,200 lines over the four models)."""
    batch = work / "demo_batch.jsonl"
    batch.write_bytes(resources.files("corral").joinpath("data", "demo_batch.jsonl")
                      .read_bytes())
    import subprocess

    subprocess.run([sys.executable, "-m", "producer", "submit", str(batch)], env=env,
                   check=True, capture_output=True)


def shoot(playwright: object, chromium: str, base_url: str, out: Path) -> None:
    """Open Flower's pages in headless Chromium and save them."""
    browser = playwright.chromium.launch(  # type: ignore[attr-defined]
        executable_path=chromium, headless=True,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run"])
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1,
                                  http_credentials={"username": USER, "password": PASSWORD})
    page = context.new_page()
    page.goto(f"{base_url}/workers")
    page.wait_for_selector("#workers-table tbody tr")
    page.screenshot(path=str(out / "flower-workers.png"))
    page.goto(f"{base_url}/tasks")
    page.wait_for_selector("#tasks-table tbody tr td")
    page.evaluate("""() => {  // the slowest first, as a click on Runtime (twice) sorts
        const table = $('#tasks-table').DataTable();
        const column = table.column('th[data-column=runtime]').index();
        table.order([column, 'desc']).draw();
    }""")
    page.wait_for_timeout(1500)
    page.screenshot(path=str(out / "flower-tasks.png"))
    workers = httpx.get(f"{base_url}/api/workers", auth=(USER, PASSWORD)).json()
    page.goto(f"{base_url}/worker/{sorted(workers)[0]}")
    page.wait_for_selector("#workername")
    page.screenshot(path=str(out / "flower-worker.png"), full_page=True)
    browser.close()


if __name__ == "__main__":
    sys.exit(main())
