"""schemathesis against a served Loudou, with the committed document, every role's key and none.

    python -m tests.contract.run_schemathesis [--seed 1] [--budget 150]

Serves the app (tests/contract/served.py: fresh migrated database, rate limits off, a key per role),
then runs `st run openapi/openapi.json --checks all` once per credential with a fixed seed, sharing
`--budget` seconds between them (the admin run gets the most, with the stateful phase). Exits
non-zero when any run reports a failure or an error. Config: tests/contract/schemathesis.toml;
hooks (the NDJSON serializer): tests/contract/st_hooks.py. Reports land in .loudou/schemathesis/."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.contract.served import ROOT, served

HERE = Path(__file__).resolve().parent
ST = str(Path(sys.executable).parent / "st")
# Share of the time budget per credential; the admin reaches every operation's success path.
SHARES = {"admin": 0.5, "manager": 0.15, "rep": 0.15, "viewer": 0.1, "anonymous": 0.1, "imports": 0.05}
# The history imports read NDJSON, text on the wire (`type: string`). A value schemathesis draws as
# "not a string" can only go out serialised, and then it is valid NDJSON whose lines are checked
# one by one into a 200 report (issue 12: good lines land, bad ones are listed with their line
# number). So "schema-violating request accepted" cannot hold for them: they get a run of their
# own (the admin's key) with every other check.
IMPORTS = "^/v1/import/"


def run(seed: int, budget: float, report_dir: Path) -> int:
    """Every credential's run; the number of runs that failed."""
    report_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    with served(log_path=report_dir / "serve.log") as app:
        env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.contract.st_hooks", "PYTHONPATH": str(ROOT)}
        for who, share in SHARES.items():
            seconds = max(10, int(budget * share))
            phases = "examples,coverage,fuzzing" + (",stateful" if who == "admin" else "")
            command = [
                ST,
                "--config-file",
                str(HERE / "schemathesis.toml"),
                "run",
                str(ROOT / "openapi" / "openapi.json"),
                "--url",
                app.base_url,
                "--checks",
                "all",
                "--seed",
                str(seed),
                "--max-time",
                str(seconds),
                "--phases",
                phases,
                # One worker: hypothesis describes strategies with `ast` while drawing, which
                # CPython 3.11 does not do safely from two threads (a "recursion depth mismatch").
                "--workers",
                "1",
                "--report",
                "junit",
                "--report-junit-path",
                str(report_dir / f"{who}-{seed}.xml"),
            ]
            if who == "admin":
                # The stateful phase infers links from `id` fields: creating a stage answers the
                # pipeline it belongs to (its `id` is the pipeline's), which schemathesis then takes
                # for the new stage's id and reports as "created resource not found".
                command += ["--exclude-checks", "ensure_resource_availability"]
            if who == "imports":
                command += ["--include-path-regex", IMPORTS, "--exclude-checks", "negative_data_rejection"]
            else:
                command += ["--exclude-path-regex", IMPORTS]
            if who != "anonymous":
                key = app.keys["admin" if who == "imports" else who]
                command[5:5] = ["-H", f"Authorization: Bearer {key}"]
            started = time.monotonic()
            print(f"== schemathesis as {who} (seed {seed}, {seconds} s)", flush=True)
            done = subprocess.run(command, env=env, cwd=ROOT, check=False, capture_output=True, text=True)
            out = done.stdout + done.stderr
            (report_dir / f"{who}-{seed}.txt").write_text(out)
            lines = out.splitlines()
            summary = [line for line in lines if " generated, " in line]
            print(
                summary[-1] if summary else "",
                f"({time.monotonic() - started:.0f} s, exit {done.returncode})",
            )
            if done.returncode != 0:
                failed += 1
                # Each failure's heading, check and status; the whole report is in the .txt file.
                keep = [
                    line
                    for line in lines
                    if line.startswith(("___", "- ST", "[", "  ❌", "  🚫", "    curl"))
                ]
                print("\n".join(keep[:200]))
    return failed


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server on the way out
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--budget", type=float, default=150, help="seconds shared by the runs")
    parser.add_argument("--report-dir", type=Path, default=ROOT / ".loudou" / "schemathesis")
    args = parser.parse_args()
    failed = run(args.seed, args.budget, args.report_dir)
    print(f"schemathesis: {len(SHARES) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
