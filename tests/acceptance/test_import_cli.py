"""`npsd import` as a process, as an operator runs it: exit codes and messages, the summary
line, a re-import, a dry run, and `--sync` answers reaching (the fake) Segment through
`npsd sync-now`."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fakes.segment_api import FakeSegment
from tests.harness import Daemon

SAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "import"


async def test_import_from_the_command_line(tmp_path: Path) -> None:
    async with FakeSegment("wk") as seg:
        npsd = Daemon(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'npsd.db'}",
                      segment={"write_key": "wk", "endpoint": seg.url})
        npsd.workdir.mkdir(parents=True, exist_ok=True)
        npsd.write_config()
        assert (await npsd.cli("migrate"))[0] == 0

        bad = tmp_path / "bad.csv"
        bad.write_text("email,score,comment,answered_at\n"
                       "a@example.com,9,,2026-02-01T10:00:00Z\n"
                       "b@example.com,eleven,,2026-02-01T10:00:00Z\n")
        code, out, err = await npsd.cli("import", str(bad), "--format", "csv")
        assert code == 1 and out == ""
        assert f"{bad}:3: column 'score': 'eleven' is not a score from 0 to 10" in err
        assert "1 bad row of 2; nothing was imported" in err
        code, out, err = await npsd.cli("import", str(tmp_path / "none.csv"), "--format", "csv")
        assert code == 1 and "none.csv: no such file" in err
        code, out, err = await npsd.cli("import", str(bad), "--format", "xls")
        assert code == 2 and "invalid choice: 'xls'" in err

        sample = str(SAMPLES / "delighted.csv")
        code, out, err = await npsd.cli("import", sample, "--format", "delighted", "--dry-run")
        assert code == 0, err
        assert out.strip() == (f"{sample}: 3 rows read, 3 would be imported, 0 already present, "
                               "0 skipped bad, 0 skipped erased, 3 users to create (dry run: "
                               "nothing written)")
        code, out, err = await npsd.cli("import", sample, "--format", "delighted", "--sync")
        assert code == 0, err
        assert out.strip() == (f"{sample}: 3 rows read, 3 imported, 0 already present, "
                               "0 skipped bad, 0 skipped erased, 3 users created")
        assert '"event": "import.finished"' in err and "@example.com" not in err
        code, out, _ = await npsd.cli("import", sample, "--format", "delighted", "--sync")
        assert code == 0 and "0 imported, 3 already present" in out
        code, out, _ = await npsd.cli("report", "--json")
        assert json.loads(out)["overall"]["responses"] == 3

        code, out, err = await npsd.cli("sync-now")
        assert code == 0, err + out
        traits = {m["userId"]: m["traits"] for m in seg.messages if m["type"] == "identify"}
        assert traits["u-ann"]["NPS_rating"] == 10 and traits["u-cara"]["NPS_rating"] == 8
        assert not any(u.startswith("npsd-email-") for u in traits)  # Bob is email-only
