"""``thinktank serve --ray``: start or join Ray, deploy the applications, serve until stopped."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

from services.serving.app import ServeApp, deploy
from services.settings import Settings


def start_ray(settings: Settings, host: str, port: int) -> None:
    """Join the configured cluster or start a local Ray instance, and start Serve's HTTP
    proxy on ``host:port``."""
    import ray
    from ray import serve

    # Ray reports usage to its makers unless told not to; thinktank's operators opt in.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    serving = settings.serving
    if serving.ray_address:
        ray.init(address=serving.ray_address, log_to_driver=False)
    else:
        ray.init(num_cpus=serving.num_cpus, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})


def serve_forever(
    settings: Settings,
    host: str,
    port: int,
    report: Callable[[list[ServeApp]], None],
) -> None:
    """Deploy, report what runs where, and block until SIGINT/SIGTERM; then tear down the
    applications (the cluster itself stays when it was joined)."""
    import ray
    from ray import serve

    start_ray(settings, host, port)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        report(deploy(settings, bind_host=host))
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()
