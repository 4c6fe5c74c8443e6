"""The advice a user gets for a state_file in a shared or a system directory.

Runs `check-config` of ``--tree`` (default: this checkout) in child processes, as root
against a sticky directory open to all (what /tmp is) and as ``nobody`` against a
directory of root's (what /srv or /var/lib is), and counts the advice lines that would
break the system if followed: a `chmod go-w` or a `chown` of that directory. Then it
follows the advice where it names a state_file, and says whether a run accepts it.

    .venv/bin/python bench/state_place_advice.py [--tree /path/to/checkout]

Needs root (to become nobody); no network; a few seconds.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOBODY = 65534
PROBE = """
import os, sys
from pathlib import Path
from alerter.statefile import check_usable, ensure_private_dir
uid = int(sys.argv[2])
if uid != os.geteuid():
    os.setgid(uid); os.setuid(uid)
try:
    check_usable(Path(sys.argv[1]))
    ensure_private_dir(Path(sys.argv[1]).parent)
    print("OK")
except Exception as exc:
    print(exc)
"""


def advice(tree: Path, state_file: Path, uid: int) -> str:
    """Return what the tree's statefile says of ``state_file`` to a user ``uid``."""
    return subprocess.run(
        [sys.executable, "-c", PROBE, str(state_file), str(uid)],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "HOME": "/nonexistent", "PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=ROOT)
    tree = parser.parse_args().tree.resolve()
    top = Path(tempfile.mkdtemp(prefix="fua-place-", dir="/tmp"))
    try:
        top.chmod(0o755)
        shared = top / "tmp"
        shared.mkdir()
        shared.chmod(0o1777)
        system = top / "srv"
        system.mkdir(mode=0o755)
        harmful = 0
        for who, directory, uid in (("root", shared, 0), ("nobody", system, NOBODY)):
            line = advice(tree, directory / "state.json", uid)
            bad = re.search(rf"`(chmod go-w|chown \S+) {re.escape(str(directory))}`", line)
            harmful += bool(bad)
            print(f"{who}, state_file in {directory.name}/: {'HARMFUL ' if bad else ''}{line}")
            suggested = re.search(r"`state_file: ([^`]+)`", line)
            if suggested:
                print(f"  following it: {advice(tree, Path(suggested.group(1)), uid)}")
        print(f"advice lines that would chmod/chown a shared or system directory: {harmful} of 2")
    finally:
        shutil.rmtree(top)


if __name__ == "__main__":
    main()
