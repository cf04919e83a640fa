"""Telling a dead lease holder from a live one on this machine.

Leases name their holder "host:pid:nonce". A holder on this host whose pid no longer exists
crashed (kill -9, OOM, power cut): its claims can be taken back at once instead of waiting
for the lease to run out. Holders on other hosts are only ever taken over by expiry."""

from __future__ import annotations

import os
import socket


def owner_is_dead(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, owned by someone else
    return False
