"""The workers' Celery app: the settings each worker derives from its own options."""

from __future__ import annotations

import os
import subprocess
import sys

from workers.app import CONSUMER_CONNECTIONS
from workers.pools import SLOT_GROWTH

# What `celery worker --concurrency 64` builds, up to the broker channel its consumer uses.
PROBE = """
from workers.app import app
app.Worker(concurrency=64, pool="threads", hostname="probe@test")
with app.connection_for_read() as connection:
    print(connection.default_channel.pool.max_connections)
"""


def test_the_broker_pool_has_a_connection_per_task_slot_the_worker_may_grow_to(
        redis_url: str, write_config) -> None:
    env = {**os.environ, "CORRAL_CONFIG": str(write_config()), "CORRAL_REDIS_URL": redis_url}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    # kombu's default is 10, which a 64-greenlet gevent pool ran dry under load (lost acks);
    # a worker may grow to SLOT_GROWTH x its slots from Flower.
    assert int(done.stdout.strip()) == 64 * SLOT_GROWTH + CONSUMER_CONNECTIONS
