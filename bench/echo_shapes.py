"""How much of a credential the job sent comes back out when a peer echoes it reshaped.

For each of a few credentials (droid's refresh token, an API key, a healthcheck password)
and each shape a peer or proxy may echo it in (as sent; wrapped across two lines at
several points; percent-encoded; form-encoded), ``--tree``'s (default: this checkout)
``redact`` and ``hide_sent`` are asked to clean an error text quoting it, as every text a
peer sent and every log line is. Reported: the trials in which 6 or more consecutive
characters of the credential survived, and the longest piece seen.

    .venv/bin/python bench/echo_shapes.py [--tree /path/to/checkout]

No network; a few seconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = r"""
import json, sys
from urllib.parse import quote, quote_plus
from alerter import redact as r
secrets = ["Zq9sH0rtRefr3sh7oken", "fk-test-0123456789abcdefSECRET", "pa/ss w+rd=42"]
for s in secrets:
    r.remember_sent(s)
trials = []
for s in secrets:
    shapes = {"as sent": s, "percent-encoded": quote(s, safe=""), "form-encoded": quote_plus(s)}
    for cut in range(4, len(s) - 3, 3):
        shapes[f"wrapped at {cut}"] = f"{s[:cut]}\n  {s[cut:]}"
    for name, echoed in shapes.items():
        text = f"invalid_grant: {echoed} was rejected"
        hide = getattr(r, "hide_sent", r.redact)
        for how, shown in (("redact", r.redact(text)), ("hide_sent", hide(text))):
            longest = max(
                (j - i for i in range(len(s)) for j in range(i + 1, len(s) + 1) if s[i:j] in shown),
                default=0,
            )
            trials.append([s[:6], name, how, longest])
print(json.dumps(trials))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=ROOT)
    tree = parser.parse_args().tree.resolve()
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=tree,
        env={"PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    trials = json.loads(done.stdout)
    leaked = [t for t in trials if t[3] >= 6]
    for secret, shape, how, longest in leaked:
        print(f"  {secret}...: {shape}, {how}: {longest} characters shown")
    longest = max((t[3] for t in trials), default=0)
    print(
        f"trials leaking 6+ characters of a sent credential: {len(leaked)} of {len(trials)}; "
        f"longest piece {longest}"
    )


if __name__ == "__main__":
    main()
