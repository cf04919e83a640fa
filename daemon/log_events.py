"""Every log event name npsd emits, in one place: operators grep for these, tests assert
on them, and the README's Logs table lists exactly these (tests/unit/test_log_events.py
checks the source, this registry and the README against each other). Names are
`area.event`; a new one goes here and into the README's table."""

from __future__ import annotations

EVENTS: dict[str, frozenset[str]] = {
    "server": frozenset({"server.started", "server.stopping", "server.stopped",
                         "server.start_failed", "server.listen_failed",
                         "server.stuck_tasks"}),
    "daemon": frozenset({"daemon.task_died"}),
    "shutdown": frozenset({"shutdown.dispatch_timeout", "shutdown.release_failed",
                           "shutdown.jobs_timeout", "shutdown.job_cancelled"}),
    "config": frozenset({"config.weak_secret", "config.reloaded", "config.reload_failed",
                         "config.restart_needed", "config.plain_http_receiver"}),
    "storage": frozenset({"storage.migrated", "storage.ready", "storage.checkpoint_failed",
                          "storage.checkpoint_recovered"}),
    "intake": frozenset({"intake.accepted", "intake.rejected", "intake.unavailable",
                         "intake.commit_failed", "intake.commit_error", "intake.refused",
                         "intake.refused_suppressed", "intake.delete_refused",
                         "intake.future_timestamp"}),
    "survey": frozenset({"survey.scheduled", "survey.sent", "survey.retry", "survey.failed",
                         "survey.skipped", "survey.deferred", "survey.answered",
                         "survey.unsubscribed", "survey.leases_taken_over",
                         "survey.handoff_failed"}),
    "sync": frozenset({"sync.started", "sync.batch_sent", "sync.finished", "sync.failed",
                       "sync.message_rejected", "sync.busy", "sync.catch_up",
                       "sync.lease_broken", "sync.batch_retrying", "sync.batch_gave_up",
                       "sync.batch_rejected", "sync.message_isolated", "sync.unauthorized"}),
    "housekeeping": frozenset({"housekeeping.done"}),
    "watchdog": frozenset({"watchdog.store_stalled"}),
    "privacy": frozenset({"privacy.erased", "privacy.files_removed",
                          "privacy.files_not_removed", "privacy.log_not_wiped"}),
    "admin": frozenset({"admin.user_erased"}),
    "outbox": frozenset({"outbox.remove_failed"}),
    "import": frozenset({"import.finished", "import.aborted"}),
    "delivery": frozenset({"delivery.sent", "delivery.retry", "delivery.dead_lettered",
                           "delivery.dropped", "delivery.leases_taken_over",
                           "delivery.replayed"}),
    "console": frozenset({"console.login", "console.login_refused", "console.logout",
                          "console.login_limited",
                          "console.sync_started", "console.sync_refused", "console.exported"}),
}

ALL: frozenset[str] = frozenset().union(*EVENTS.values())
