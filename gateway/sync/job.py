"""The JSON sync inside ``mailgate serve``: one APScheduler job per process.

Every serving worker process starts a :class:`~apscheduler.schedulers.background.
BackgroundScheduler` with one interval job. That alone would sync N times per
interval (apscheduler #160); instead each tick first reads when any process
last ran (LDAP) and then needs the cluster-wide LDAP lock, so the deployment
as a whole syncs about once per interval and never twice at once.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import logging
import random
import threading
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from ..services import current
from .runner import SyncRunner

log = logging.getLogger(__name__)

_CREATE = threading.Lock()
FIRST_DELAY = (5.0, 30.0)   # seconds after start; spread so workers do not all race


def runner_for(app: Any) -> SyncRunner:
    """This process's SyncRunner (made on first use) on ``app``'s services."""
    services = current(app)
    with _CREATE:
        if services.sync is None:
            services.sync = SyncRunner(services.settings)
        runner: SyncRunner = services.sync
        return runner


def start_scheduler(app: Any) -> Any:
    """Start the periodic sync in this process (when JSON sources are set)."""
    runner = runner_for(app)
    settings = runner.settings
    if not settings.json_urls or runner.scheduler is not None:
        return runner.scheduler
    interval = settings.json_interval
    first = dt.datetime.now(dt.UTC) + dt.timedelta(
        seconds=random.uniform(FIRST_DELAY[0], min(FIRST_DELAY[1], interval)))  # noqa: S311
    if not log.isEnabledFor(logging.DEBUG):
        # APScheduler logs every tick of every worker at INFO; the runner logs
        # what matters (runs that did something, failures).
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
    scheduler = BackgroundScheduler(daemon=True, timezone=dt.UTC)
    scheduler.add_job(runner.tick, "interval", seconds=interval, id="mailgate-json-sync",
                      next_run_time=first, max_instances=1, coalesce=True,
                      misfire_grace_time=interval)
    scheduler.start()
    runner.scheduler = scheduler
    atexit.register(_shutdown, scheduler)
    log.info("JSON sync scheduled every %d s for %d source(s)", interval,
             len(settings.json_urls))
    return scheduler


def _shutdown(scheduler: Any) -> None:
    with contextlib.suppress(Exception):  # already stopped
        scheduler.shutdown(wait=False)
