"""Training jobs: run a trainer in a process of its own, keyed so a repeat never trains twice.

Training never runs inside the process that asks for it (a CLI, a Celery worker, the API):
hours of GPU work do not fit a Celery prefork slot or its visibility timeout, and a crashed
trainer must not take a worker down. The asker stores a training run, launches the job and
tracks it through the store; the job records its progress there itself.

- :func:`submit_training` stores the run under an idempotency key (by default a hash of the
  kind, the settings and the data's contents), or finds the run that holds the key and says
  what to do with it: ``start``, ``resume``, ``running``, ``done`` or ``stopped``.
- :func:`launch_run` starts a submitted run's job: :func:`launch` starts
  ``python -m training.jobs run RUN_ID`` here (or the same under
  ``torchrun --nproc-per-node N`` for several GPUs) with the run id as its only argument;
  :func:`launch_ray` submits that command as a Ray Job (``thinktank-train-<run id>-<attempt>``,
  never a second one while an attempt is pending or running). Relaunching the same run
  continues from its last checkpoint.
- :func:`refresh_status` notices a run whose job ended without recording its end: its process
  on this machine died, or (given the cluster's :class:`LaunchOptions`) its Ray job ended.

The job (:func:`run_job`) loads the run's config from the store, trains, publishes the adapter
under ``models/adapters/<name>/`` and registers the model version; SIGINT or SIGTERM makes it
checkpoint at the next step and end ``interrupted``.

A campaign's Celery task calls :func:`submit_training` with the training run id it owns as the
key, then :func:`launch` with ``detach=True`` or :func:`launch_ray`, and polls the store (or
Ray's job status) from a periodic task; the Celery task itself never trains.

The parts: ``common`` (options, configs, errors, :func:`settle`), ``submission`` (keys,
stored runs, :func:`launch_run`), ``local`` and ``ray_jobs`` (the two launchers), ``process``
(the job itself). The names callers use are handed on here.
"""

from training.jobs.common import (
    CONFIGS,
    EXIT_INTERRUPTED,
    JobConflict,
    LaunchOptions,
    config_for,
    settle,
)
from training.jobs.local import (
    job_command,
    launch,
    log_path,
    signal_local,
    stop_tied,
    wait_attached,
)
from training.jobs.ray_jobs import RAY_EXIT_CODES, launch_ray, ray_jobs_of, wait_ray
from training.jobs.submission import (
    Submission,
    check_data,
    idempotency_key,
    launch_run,
    refresh_status,
    resolve_base,
    submit_training,
    wait_run,
)

__all__ = [
    "CONFIGS",
    "EXIT_INTERRUPTED",
    "RAY_EXIT_CODES",
    "JobConflict",
    "LaunchOptions",
    "Submission",
    "check_data",
    "config_for",
    "idempotency_key",
    "job_command",
    "launch",
    "launch_ray",
    "launch_run",
    "log_path",
    "ray_jobs_of",
    "refresh_status",
    "resolve_base",
    "settle",
    "signal_local",
    "stop_tied",
    "submit_training",
    "wait_attached",
    "wait_ray",
    "wait_run",
]
