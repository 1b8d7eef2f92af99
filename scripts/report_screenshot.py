"""A screenshot of `corral report` for the docs (docs/images/report.png), in a real browser.

Starts a private Redis and record store (SQLite in a temporary directory), the simulator with
the example config's four models (0.3-1.3 s a call, 3% of calls answered 429), two workers,
and runs the packaged demo batch (1,200 lines); then writes its report and opens it in
headless Chromium (playwright, driving the system's chromium: `apt-get install chromium`,
`pip install -e '.[screenshots]'`; no browser download).

Run from the repository root:  python scripts/report_screenshot.py [--out docs/images/report.png]
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import subprocess
import sys
import tempfile
import tomllib
from importlib import resources
from pathlib import Path

from corral.config import example_config_text, parse_config
from corral.embedded_redis import EmbeddedRedis
from producer.local_stack import SIM_READY, ChildProcess, worker_command

EXAMPLE_BASE_URL = "http://127.0.0.1:8100/v1"
SIMULATOR = ["--latency-ms", "800", "--latency-jitter-ms", "500", "--rate-limit-rate", "0.03",
             "--retry-after-s", "1", "--seed", "7"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images/report.png"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright  # an optional tool, not a dependency

    work = Path(tempfile.mkdtemp(prefix="corral-report-"))
    key = secrets.token_hex(16)
    children: list[ChildProcess] = []
    with EmbeddedRedis() as redis_server:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")},
               "CORRAL_REDIS_URL": redis_server.url, "CORRAL_GATEWAY_KEY": key,
               "CORRAL_STORE_URL": f"sqlite:///{work / 'corral.db'}",
               "CORRAL_SPOOL_DIR": str(work / "spool"), "PYTHONUNBUFFERED": "1"}
        try:
            config = write_config(work, env, key, children)
            env["CORRAL_CONFIG"] = str(config)
            queues = sorted(model.queue for model in parse_config(
                tomllib.loads(config.read_text())).models.values())
            for name in ("alpha", "bravo"):
                children.append(ChildProcess(name, worker_command(
                    queues=queues, concurrency=16, name=name, pool="threads"), env, work))
            for child in children[1:]:
                child.wait_for(re.compile(rb"\bready\b"))
            batch_id = run_demo(work, env)
            page_path = work / "report.html"
            subprocess.run([sys.executable, "-m", "producer", "report", batch_id, "-o",
                            str(page_path)], env=env, check=True)
        finally:
            for child in reversed(children):
                child.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=args.chromium, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_context(viewport={"width": 1680, "height": 1050},
                                      device_scale_factor=1).new_page()
        page.goto(page_path.as_uri())
        page.screenshot(path=str(args.out), full_page=True)
        browser.close()
    print(f"screenshot in {args.out}", file=sys.stderr)
    return 0


def write_config(work: Path, env: dict[str, str], key: str,
                 children: list[ChildProcess]) -> Path:
    """Start the simulator with the example config's models; write the config pointing to it."""
    text = example_config_text()
    sim_args = ["--api-key", key, *SIMULATOR]
    for model in parse_config(tomllib.loads(text)).models.values():
        sim_args += ["--model", f"{model.upstream}:rpm={model.rpm},tpm={model.tpm},"
                                f"ctx={model.context_window},max_tokens={model.default_max_tokens}"]
    sim = ChildProcess("simulator", [sys.executable, "-m", "simulator", "--port", "0",
                                     *sim_args], env, work)
    children.append(sim)
    base_url = sim.wait_for(SIM_READY).group(1).decode()
    config = work / "corral.toml"
    config.write_text(text.replace(EXAMPLE_BASE_URL, f"{base_url}/v1"), encoding="utf-8")
    return config


def run_demo(work: Path, env: dict[str, str]) -> str:
    """Submit the packaged demo batch (1,200 lines over the four models), wait for its end,
    and return its id."""
    batch = work / "demo_batch.jsonl"
    batch.write_bytes(resources.files("corral").joinpath("data", "demo_batch.jsonl")
                      .read_bytes())
    done = subprocess.run([sys.executable, "-m", "producer", "submit", str(batch), "--wait"],
                          env=env, capture_output=True, text=True)
    if done.returncode not in (0, 1):  # 1: some lines failed, which a report shows too
        raise SystemExit(f"submit failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


if __name__ == "__main__":
    sys.exit(main())
