"""Why an attempt ended badly (``RunError.kind``), and what each reason means for retries.

The kind is a closed set: the agent picks one when it reports a failure or gives an attempt
back, and the scheduler decides a retry by one lookup in :data:`RETRY`, never by comparing
strings. A new kind is one member here plus one row in the table (a test checks every kind
has one). Adding a kind is a wire change: schedulers learn it before agents send it, since a
reader refuses a kind it does not know.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    EXIT_CODE = "exit_code"  # the script exited non-zero or was killed by a signal
    TIMEOUT = "timeout"  # the run exceeded its max_duration_s
    ENVIRONMENT = "environment"  # the environment (venv, conda, image, engine) failed
    SNAPSHOT = "snapshot"  # the source snapshot could not be materialised
    START = "start"  # the script could not be started
    SECRETS = "secrets"  # the run's secret variables did not reach the agent
    INTERNAL = "internal"  # the agent failed while running the attempt
    LOST = "lost"  # the agent lost the attempt (lease lapsed, agent died)
    CANCELED = "canceled"  # a user canceled the run
    PREEMPTED = "preempted"  # the attempt's low-priority node was taken away
    DISK_FULL = "disk_full"  # the store refused the run's logs or outputs as full
    TARGET_DELETED = "target_deleted"  # its target was deleted or detached with --force
    QUEUE_TIMEOUT = "queue_timeout"  # still Queued after the run's queue_timeout_s
    # a sweep's early-termination policy stopped the trial (it ends Canceled, not Failed)
    EARLY_TERMINATED = "early_terminated"


class Retry(StrEnum):
    """What a Failed report of a kind does to a run that has ``max_retries`` left."""

    MAX_RETRIES = "max_retries"  # run again as a new attempt, using one of max_retries
    NEVER = "never"  # the run ends Failed


RETRY: dict[ErrorKind, Retry] = {
    # failures of the script or its preparation: the thing max_retries is for
    ErrorKind.EXIT_CODE: Retry.MAX_RETRIES,
    ErrorKind.ENVIRONMENT: Retry.MAX_RETRIES,
    ErrorKind.SNAPSHOT: Retry.MAX_RETRIES,
    ErrorKind.START: Retry.MAX_RETRIES,
    ErrorKind.INTERNAL: Retry.MAX_RETRIES,
    # the run used up the time it asked for: another attempt would be stopped the same way
    ErrorKind.TIMEOUT: Retry.NEVER,
    # the scheduler holds no values to send again: another attempt would fail the same way
    ErrorKind.SECRETS: Retry.NEVER,
    # the store stays full until someone frees space: another attempt would fail the same way
    ErrorKind.DISK_FULL: Retry.NEVER,
    # a user asked for the end, or a sweep's policy did
    ErrorKind.CANCELED: Retry.NEVER,
    ErrorKind.EARLY_TERMINATED: Retry.NEVER,
    # the run never started: its target is gone, or it waited longer than it allowed
    ErrorKind.TARGET_DELETED: Retry.NEVER,
    ErrorKind.QUEUE_TIMEOUT: Retry.NEVER,
    # lost or preempted attempts come back as Queued reports and are requeued free of
    # max_retries (``scheduler.runs.apply_report``); one that fails (a loss while finalizing:
    # the script already ran to its end) is never run again
    ErrorKind.LOST: Retry.NEVER,
    ErrorKind.PREEMPTED: Retry.NEVER,
}
