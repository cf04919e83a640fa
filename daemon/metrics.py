"""Prometheus metrics, one registry per app (never the global one: tests run many apps)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from storage.group_commit import CommitStats


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("npsd_http_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=r)
        self.events = Counter("npsd_events_accepted", "Accepted events by type", ["type"],
                              registry=r)
        self.duplicates = Counter("npsd_events_duplicate", "Redelivered events (dedup hits)",
                                  registry=r)
        self.rejected = Counter("npsd_events_rejected", "Events refused as invalid", registry=r)
        self.commit_seconds = Histogram(
            "npsd_intake_commit_seconds", "Time to commit a group of intake messages",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r)
        self.emails = Counter("npsd_emails", "Survey emails by result (sent, retry, failed)",
                              ["result"], registry=r)
        self.surveys = Gauge("npsd_surveys", "Surveys by state", ["state"], registry=r)
        self.backlog = Gauge("npsd_survey_backlog", "Surveys due now and not yet sent",
                             registry=r)
        self.oldest_due = Gauge("npsd_survey_oldest_due_seconds",
                                "Age of the oldest due, unsent survey", registry=r)
        self.sync_batches = Counter("npsd_sync_batches", "Sync-back batches by result",
                                    ["result"], registry=r)
        self.sync_messages = Counter("npsd_sync_messages", "Messages synced back to Segment",
                                     registry=r)
        self.answers = Counter("npsd_answers", "Survey answers recorded", registry=r)
        self.deliveries = Counter(
            "npsd_deliveries", "Alert and webhook delivery attempts by channel (webhook, "
            "slack, email) and result (delivered, retry, dead, dropped)",
            ["channel", "result"], registry=r)
        self.deliveries_by_state = Gauge(
            "npsd_delivery_backlog",
            "Alerts and webhooks waiting (pending) or dead-lettered (dead)",
            ["state"], registry=r)
        # labels() takes a lock and builds a key on every call: on the intake's hot path the
        # children are looked up once and kept.
        self._children: dict[tuple[Any, ...], Any] = {}
        self._request_counts: dict[tuple[str, int], int] = {}

    def count_request(self, route: str, status: int) -> None:
        # A plain count (no lock, on the event loop only), added to the Prometheus counter
        # when /metrics is scraped: this runs for every request.
        key = (route, status)
        self._request_counts[key] = self._request_counts.get(key, 0) + 1

    def flush(self) -> None:
        """Bring the counters up to date; call before rendering the registry."""
        counts, self._request_counts = self._request_counts, {}
        for (route, status), n in counts.items():
            self.requests.labels(route, str(status)).inc(n)

    def count_commit(self, stats: CommitStats) -> None:
        self.commit_seconds.observe(stats.seconds)
        for kind, n in stats.accepted.items():
            key = ("events", kind)
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self.events.labels(kind)
            child.inc(n)
        if stats.duplicates:
            self.duplicates.inc(stats.duplicates)
