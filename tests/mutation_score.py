"""Mutation score per module from mutmut's results in mutants/ (`make mutate` prints it).

mutmut 3 keeps one `<file>.meta` JSON per mutated file with an exit code per mutant; this
counts them the way tests/MUTATION.md reports them: killed (a test failed, or the mutant
hung past mutmut's timeout), survived, and not covered by any unit test. The score is
killed / (killed + survived + not covered); equivalent mutants are listed by hand in
tests/MUTATION.md, since no tool can decide them.

Usage: python tests/mutation_score.py [mutants-dir] [--survivors]
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

MODULES = ("jobs/rules.py", "jobs/timing.py", "jobs/sync_batching.py", "jobs/book_rules.py")
KILLED = {1, 3, 36, -24, 24, 152, 255, -11, -9}  # failed, or timed out / crashed
SURVIVED = {0}
NOT_COVERED = {5, 33}


def classify(code: int | None) -> str:
    if code in KILLED:
        return "killed"
    if code in SURVIVED:
        return "survived"
    if code in NOT_COVERED:
        return "not covered"
    return "not run"


def main(argv: list[str]) -> int:
    show = "--survivors" in argv
    args = [a for a in argv if not a.startswith("--")]
    root = Path(args[0]) if args else Path("mutants")
    print(f"{'module':<24} {'mutants':>7} {'killed':>7} {'survived':>8} {'uncovered':>9} "
          f"{'not run':>7} {'score':>7}")
    for module in MODULES:
        meta = root / f"{module}.meta"
        if not meta.exists():
            print(f"{module:<24} (no results: run `make mutate`)")
            continue
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        counts = Counter(classify(code) for code in codes.values())
        judged = counts["killed"] + counts["survived"] + counts["not covered"]
        score = f"{100 * counts['killed'] / judged:.1f} %" if judged else "-"
        print(f"{module:<24} {len(codes):>7} {counts['killed']:>7} {counts['survived']:>8} "
              f"{counts['not covered']:>9} {counts['not run']:>7} {score:>7}")
        if show:
            for name, code in sorted(codes.items()):
                if classify(code) in ("survived", "not covered"):
                    print(f"    {classify(code):<11} {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
