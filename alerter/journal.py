"""Lines for journald: the priority of each line as an sd-daemon ``<N>`` prefix.

journald stores a service's output at priority 6 (info) unless a line starts with
``<N>``, the syslog priority (sd-daemon.h: SD_ERR ``<3>``, SD_WARNING ``<4>``, SD_INFO
``<6>``). Without the prefix ``journalctl -p warning`` shows none of the job's problems.

The prefix is added only to a stream that really is connected to the journal: systemd
sets ``JOURNAL_STREAM`` to the ``<device>:<inode>`` of that stream, and output
redirected elsewhere (a file, a pipe, a terminal) keeps its plain text.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TextIO

# syslog priorities, as sd-daemon.h names them (SD_CRIT, SD_ERR, SD_WARNING, SD_INFO, SD_DEBUG).
PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
ERR = logging.ERROR


def is_journal(stream: TextIO, env: Mapping[str, str]) -> bool:
    """Given an output stream and the environment, return whether the stream is the journal.

    True only when ``JOURNAL_STREAM`` names the device and inode of the stream's file, the
    check systemd.exec(5) describes (the variable is inherited by children whose output may
    go elsewhere); a stream without a file descriptor is not.
    """
    device, _, inode = env.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # no descriptor (a test's capture), or closed
        return False
    return (info.st_dev, info.st_ino) == (int(device), int(inode))


def priority_of(level: int) -> int:
    """Given a logging level, return its syslog priority (a level in between takes the next
    more severe one)."""
    for threshold in sorted(PRIORITY):
        if level <= threshold:
            return PRIORITY[threshold]
    return PRIORITY[logging.CRITICAL]


def with_priority(text: str, level: int) -> str:
    """Given text and a logging level, return it with ``<N>`` before every line, so that
    journald files each line (a traceback's too) at that priority."""
    prefix = f"<{priority_of(level)}>"
    return "\n".join(prefix + line for line in text.split("\n"))


class JournalFormatter(logging.Formatter):
    """A formatter whose lines carry the record's priority for journald."""

    def format(self, record: logging.LogRecord) -> str:
        return with_priority(super().format(record), record.levelno)
