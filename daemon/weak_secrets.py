"""Sample and short secrets: refused when npsd listens beyond loopback, warned about on it.

The sample config ships `change-me` and `change-me-too` so `make run` works at once; an
operator who copies it to a server and opens the port must not end up with an intake and a
read API anyone can use. The value itself is never printed or logged, only the key, where it
came from and why it is weak."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from daemon.config import Settings

SAMPLES = frozenset({"change-me", "change-me-too"})
MIN_LENGTH = 16
GENERATE = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
_HOW_TO_SET = {
    "intake.api_keys": "NPSD_INTAKE_API_KEYS or the systemd credential intake_api_keys",
    "admin.token": "NPSD_ADMIN_TOKEN or the systemd credential admin_token",
    "intake.shared_secrets": "the same secret in Segment's destination settings",
}


@dataclass(frozen=True)
class WeakSecret:
    key: str  # e.g. "admin.token"
    origin: str  # the config file, or the variable or credential it came from
    reason: str  # "the sample value" or "shorter than 16 characters"

    def message(self) -> str:
        return (f"{self.origin}: {self.key}: {self.reason}; set a long random one, e.g. "
                f"from `{GENERATE}` (in the file, or through {_HOW_TO_SET[self.key]})")


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def weak_secrets(settings: Settings) -> list[WeakSecret]:
    found: list[WeakSecret] = []
    for key, secrets in (("intake.api_keys", settings.intake.api_keys),
                         ("admin.token", (settings.admin.token,)),
                         ("intake.shared_secrets", settings.intake.shared_secrets)):
        reasons = [_why_weak(s) for s in secrets]
        reason = next((r for r in reasons if r is not None), None)
        if reason is not None:
            found.append(WeakSecret(key, settings.origin(key), reason))
    return found


def _why_weak(secret: str) -> str | None:
    if secret in SAMPLES:
        return "still the sample value"
    if len(secret) < MIN_LENGTH:
        return f"shorter than {MIN_LENGTH} characters"
    return None


def refusal(settings: Settings, weak: list[WeakSecret]) -> str:
    """Why `npsd run` does not start off loopback with these secrets."""
    lines = [f"npsd: refusing to listen on {settings.server.host}, which is not a loopback "
             "address, with a weak secret (anyone who can reach npsd could use it):"]
    lines += [f"  {w.message()}" for w in weak]
    return "\n".join(lines)
