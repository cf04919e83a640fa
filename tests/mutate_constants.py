"""Mutations mutmut 3 does not make: module-level constants and defaults that name them.

mutmut mutates function bodies (and literal defaults), not `MAX_BATCH_BYTES = 500 * 1024` or
`max_bytes: int = MAX_BATCH_BYTES`, yet those are exactly Segment's limits. Each mutation
below is applied to a copy of the tree in a temporary directory (the work tree is never
touched) and the unit tests run there; every one must make them fail.

Usage (from the repository root, as `make mutate` does): python tests/mutate_constants.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SB, BR = "jobs/sync_batching.py", "jobs/book_rules.py"
# (file, text, replacement, which occurrence of text: 0 is the first)
MUTATIONS: list[tuple[str, str, str, int]] = [
    (SB, "MAX_BATCH_MESSAGES = 2_500", "MAX_BATCH_MESSAGES = 2_501", 0),
    (SB, "MAX_BATCH_MESSAGES = 2_500", "MAX_BATCH_MESSAGES = 2_499", 0),
    (SB, "MAX_BATCH_BYTES = 500 * 1024", "MAX_BATCH_BYTES = 500 * 1024 + 256", 0),
    (SB, "MAX_BATCH_BYTES = 500 * 1024", "MAX_BATCH_BYTES = 500 * 1024 + 1", 0),
    (SB, "MAX_BATCH_BYTES = 500 * 1024", "MAX_BATCH_BYTES = 500 * 1024 - 1", 0),
    (SB, "MAX_BATCH_BYTES = 500 * 1024", "MAX_BATCH_BYTES = 500 * 1000", 0),
    (SB, "MAX_MESSAGE_BYTES = 32 * 1024", "MAX_MESSAGE_BYTES = 32 * 1024 + 1", 0),
    (SB, "MAX_MESSAGE_BYTES = 32 * 1024", "MAX_MESSAGE_BYTES = 32 * 1024 - 1", 0),
    (SB, "ENVELOPE_BYTES = 128", "ENVELOPE_BYTES = 127", 0),
    (SB, "ENVELOPE_BYTES = 128", "ENVELOPE_BYTES = 129", 0),
    (SB, 'ELLIPSIS = "…"', 'ELLIPSIS = "..."', 0),
    (SB, '    ("traits", "NPS_comment"),\n', "", 0),
    (SB, '    ("properties", "comment"),\n', "", 0),
    (SB, "ensure_ascii=False", "ensure_ascii=True", 0),
    (SB, 'separators=(",", ":")', 'separators=(", ", ":")', 0),
    # Each signature's default (batches, pack, Packer; fit_message, fit_encoded, encode_fitted).
    *[(SB, "max_messages: int = MAX_BATCH_MESSAGES", "max_messages: int = 2_501", k)
      for k in range(3)],
    *[(SB, "max_bytes: int = MAX_BATCH_BYTES", "max_bytes: int = MAX_BATCH_BYTES + 1", k)
      for k in range(3)],
    *[(SB, "max_bytes: int = MAX_MESSAGE_BYTES", "max_bytes: int = MAX_MESSAGE_BYTES + 1", k)
      for k in range(3)],
    *[(SB, "= DEFAULT_TRUNCATABLE", "= DEFAULT_TRUNCATABLE[:1]", k) for k in range(3)],
    (BR, "one_account_per_user: bool = False", "one_account_per_user: bool = True", 0),
    (BR, "session_timeout: timedelta = timedelta(minutes=30)",
     "session_timeout: timedelta = timedelta(minutes=31)", 0),
    (BR, "session_timeout: timedelta = timedelta(minutes=30)",
     "session_timeout: timedelta = timedelta(minutes=29)", 0),
    (BR, '("firstName", "first_name")', '("firstName",)', 0),
    (BR, '("lastName", "last_name")', '("last_name", "lastName")', 0),
    (BR, '"email": ("email",),', "", 0),
    (BR, '"gender": ("gender",),', "", 0),
    (BR, '"title": "title"', '"title": "Title"', 0),
    (BR, '"username": "username", ', "", 0),
    (BR, '"Account Removed User"})', '"Account Removed Users"})', 0),
    (BR, "seen < 8", "seen < 7", 0),
]
COPIED = ["jobs", "storage", "daemon", "tests", "pyproject.toml", "config.toml", "systemd",
          "README.md"]


def mutate(text: str, old: str, new: str, which: int) -> str:
    start = -1
    for _ in range(which + 1):
        start = text.index(old, start + 1)
    return text[:start] + new + text[start + len(old):]


def main() -> int:
    root = Path.cwd()
    survivors = []
    with tempfile.TemporaryDirectory(prefix="npsd-mutate-") as tmp:
        for name in COPIED:
            source = root / name
            if source.is_dir():
                shutil.copytree(source, Path(tmp) / name,
                                ignore=shutil.ignore_patterns("__pycache__", ".hypothesis"))
            elif source.exists():
                shutil.copy2(source, Path(tmp) / name)
        env = {**os.environ, "PYTHONPATH": tmp}
        # The copy, not the installed work tree, must be what the tests import.
        where = subprocess.run([sys.executable, "-c", "import jobs, storage; print("
                                "jobs.__file__); print(storage.__file__)"], cwd=tmp, env=env,
                               capture_output=True, text=True, check=True).stdout.split()
        if not all(Path(w).is_relative_to(tmp) for w in where):
            print(f"the tests would import {where}, not the copy", file=sys.stderr)
            return 2
        for path, old, new, which in MUTATIONS:
            target = Path(tmp) / path
            original = target.read_text()
            target.write_text(mutate(original, old, new, which))
            try:
                run = subprocess.run(
                    [sys.executable, "-m", "pytest", "tests/unit", "-x", "-q",
                     "-p", "no:cacheprovider"], cwd=tmp, env=env, capture_output=True)
            finally:
                target.write_text(original)
            killed = run.returncode != 0
            label = f"{path}: {old.strip()!r} -> {new.strip()!r} (#{which})"
            print(("killed   " if killed else "SURVIVED ") + label, flush=True)
            if not killed:
                survivors.append(label)
        # The copy unmutated must pass, or every "killed" above means nothing.
        clean = subprocess.run([sys.executable, "-m", "pytest", "tests/unit", "-x", "-q",
                                "-p", "no:cacheprovider"], cwd=tmp, env=env,
                               capture_output=True)
    if clean.returncode != 0:
        print("the unmutated copy fails its unit tests: no result", file=sys.stderr)
        return 2
    print(f"{len(MUTATIONS) - len(survivors)} of {len(MUTATIONS)} constant mutations killed")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
