"""The YAML config: defaults merged under the user's file, validated all at once.

Every problem is reported as ``At 'key': what is wrong`` so that one look at the error
tells the user which line to fix. The result is a frozen :class:`Config`; nothing past
this module reads YAML or environment variables for settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import shlex
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alerter import safefile
from alerter.errors import ConfigError
from alerter.forecast import (
    DEFAULT_MIN_ELAPSED,
    DEFAULT_NOISE_MARGIN,
    DEFAULT_RULES,
    WINDOW_KINDS,
    ForecastSettings,
    Rule,
)
from alerter.meters import is_number
from alerter.redact import is_loopback_url, mask_url, redact

CONFIG_ENV = "FACTORY_USAGE_ALERT_CONFIG"
DEFAULT_BASE_URL = "https://api.factory.ai"
EU_BASE_URL = "https://api.eu.factory.ai"
DEFAULT_WORKOS_URL = "https://api.workos.com/user_management"
DEFAULT_THRESHOLDS = (50.0, 80.0, 95.0, 100.0)
SEVERITIES = ("info", "warning", "critical")
ENDPOINTS = ("auto", "limits", "allowance")

# Every meter the job knows; thresholds may name any of them, or `default`.
METER_IDS = (
    "standard",
    "premium",
    "standard.5h",
    "standard.weekly",
    "standard.monthly",
    "core.5h",
    "core.weekly",
    "core.monthly",
)

# Only the scheme is checked here: desktop services have nothing after it (``dbus://``),
# and whatever else is wrong (several URLs in one entry too) is found by the URL check
# (notify.url_problem), which names the channel and why.
_URL_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^\n]*$")


@dataclass(frozen=True)
class Channel:
    """One place notifications go: an apprise URL, or stdout when none is configured.

    ``id`` is a short digest of its ``name:`` (else of its URL), stable across runs and
    safe to store; the URL itself may carry credentials and is never shown (``label`` is
    what people see).
    """

    id: str
    label: str
    url: str | None
    severities: frozenset[str] = frozenset(SEVERITIES)
    tags: tuple[str, ...] = ()


STDOUT_CHANNEL = Channel(id="stdout", label="stdout", url=None)


@dataclass(frozen=True)
class MonitorSettings:
    """How the job watches itself (``monitor:``): stale data, reset notices, reminders.

    ``hours_without_success`` and ``reminder_hours`` are off at 0.
    """

    failures_before_alert: int = 3
    hours_without_success: float = 0.0
    reset_notice: bool = False
    reminder_hours: float = 0.0


@dataclass(frozen=True)
class QuietHours:
    """A local time range (minutes after midnight) in which non-critical notices wait.

    ``end`` before ``start`` means the range spans midnight (22:00-07:00).
    """

    start: int
    end: int

    def contains(self, minute_of_day: int) -> bool:
        """Given minutes after local midnight, return True inside the range (end excluded)."""
        if self.start <= self.end:
            return self.start <= minute_of_day < self.end
        return minute_of_day >= self.start or minute_of_day < self.end

    @staticmethod
    def text(minutes: int) -> str:
        """Given minutes after midnight, return 'HH:MM'."""
        return f"{minutes // 60:02d}:{minutes % 60:02d}"


@dataclass(frozen=True)
class Config:
    """The validated settings of one run."""

    path: Path | None = None
    base_url: str = DEFAULT_BASE_URL
    base_url_configured: bool = False
    home: Path = field(default_factory=lambda: Path.home() / ".factory")
    timeout_seconds: float = 10.0
    deadline_seconds: float = 60.0
    workos_url: str = DEFAULT_WORKOS_URL
    endpoint: str = "auto"  # which usage endpoint to read: auto, limits or allowance
    ca_bundle: str | None = None
    state_file: Path = field(default_factory=lambda: default_state_file({}))
    # Where earlier releases kept the state (see earlier_state_files); carried over once.
    earlier_state_files: tuple[Path, ...] = ()
    # Started by a unit copied from a release before 1.0: its StateDirectory= is one of
    # the earlier places, so its runs keep a state apart from the shared one (see build_config).
    old_unit_state: bool = False
    # An account's: the states of the single login before ``accounts:`` (the default path
    # and the earlier ones), taken over by the account whose login they record; and
    # whether this account is the first listed (it says what concerns them all, once).
    login_states: tuple[Path, ...] = ()
    first_account: bool = False
    thresholds: Mapping[str, tuple[float, ...]] = field(
        default_factory=lambda: {"default": DEFAULT_THRESHOLDS}
    )
    warning_at: float = 80.0
    critical_at: float = 100.0
    channels: tuple[Channel, ...] = ()
    forecast: ForecastSettings = field(default_factory=ForecastSettings)
    healthcheck_url: str | None = None
    monitor: MonitorSettings = MonitorSettings()
    quiet_hours: QuietHours | None = None
    prometheus_textfile: Path | None = None
    # extra_usage.low_balance_usd: one notice when the extra-usage balance falls below it.
    low_balance_usd: float | None = None
    # The login: the variable that may hold an API key (None: none is read), and whether
    # droid's store in ``home`` is used when it holds none (False for an api_key_env account).
    api_key_env: str | None = "FACTORY_API_KEY"
    droid_store: bool = True
    # The account this config is for (None without ``accounts:``); see :class:`Account`.
    account: str | None = None
    accounts: tuple[Account, ...] = ()
    # Keys of earlier releases still read, each with the exact fix (see _warn_deprecated).
    deprecations: tuple[str, ...] = ()

    def thresholds_for(self, meter_id: str) -> tuple[float, ...]:
        """Given a meter id, return its thresholds (its own key, else `default`)."""
        if meter_id in self.thresholds:
            return self.thresholds[meter_id]
        return self.thresholds.get("default", DEFAULT_THRESHOLDS)

    def severity_of(self, threshold: float) -> str:
        """Given a threshold percent, return its severity: info, warning or critical."""
        if threshold >= self.critical_at:
            return "critical"
        if threshold >= self.warning_at:
            return "warning"
        return "info"

    def delivery_channels(self) -> tuple[Channel, ...]:
        """Return the configured channels, or stdout alone when there are none."""
        return self.channels or (STDOUT_CHANNEL,)

    def channel_aliases(self) -> dict[str, str]:
        """Return {the id a state of an earlier release knows a named channel by (its URL's):
        its id now (its name's)}, for :func:`alerter.state.load`."""
        return {channel_id(ch.url): ch.id for ch in self.channels if ch.url and ch.id != channel_id(ch.url)}


@dataclass(frozen=True)
class Account:
    """One entry of ``accounts:``: its name, its login (``api_key_env`` or ``factory_home``,
    the other None) and the Config of its own runs (its state file, thresholds, forecast,
    channels, base URL and login)."""

    name: str
    api_key_env: str | None
    factory_home: Path | None
    config: Config


# --- default locations -------------------------------------------------------------


def _home(env: Mapping[str, str]) -> Path:
    return Path(env["HOME"]) if env.get("HOME") else Path.home()


def _user_name() -> str:
    """Return the name of the user running the job (the system unit's instance name)."""
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def default_config_file(env: Mapping[str, str]) -> Path:
    """Return ``$XDG_CONFIG_HOME/factory-usage-alert/config.yaml`` (or under ~/.config)."""
    base = env.get("XDG_CONFIG_HOME") or str(_home(env) / ".config")
    return Path(base) / "factory-usage-alert" / "config.yaml"


# Where the system unit kept the state before it shared the user's: StateDirectory=
# factory-usage-alert/%i, so <this>/<user>/state.json.
SYSTEM_STATE_ROOT = Path("/var/lib/factory-usage-alert")


def default_state_file(env: Mapping[str, str]) -> Path:
    """Return the default state path: ``$XDG_STATE_HOME/factory-usage-alert/state.json``
    (``~/.local/state/...``), whatever starts the job.

    A run by hand, cron, the user timer and the system timer all find the one state there:
    the shipped units set no ``StateDirectory=``. A unit that still sets one (a copy from
    an older release) keeps its own directory, ``$STATE_DIRECTORY``, as it always did.
    """
    if env.get("STATE_DIRECTORY"):
        # systemd may pass several directories separated by ':'; the first is ours.
        return Path(env["STATE_DIRECTORY"].split(":")[0]) / "state.json"
    base = env.get("XDG_STATE_HOME") or str(_home(env) / ".local" / "state")
    return Path(base) / "factory-usage-alert" / "state.json"


def earlier_state_files(env: Mapping[str, str], user: str) -> tuple[Path, ...]:
    """Given the environment and the user's name, return where earlier releases' units kept
    this user's state when the default path was not used.

    The user unit's ``StateDirectory=`` is ``$XDG_CONFIG_HOME`` on systemd 253 and older
    (Debian 12 has 252; from 254 on it is ``$XDG_STATE_HOME``, the default path itself),
    and the system unit's was ``/var/lib/factory-usage-alert/<user>``.
    """
    config_base = env.get("XDG_CONFIG_HOME") or str(_home(env) / ".config")
    return (
        Path(config_base) / "factory-usage-alert" / "state.json",
        SYSTEM_STATE_ROOT / user / "state.json",
    )


def default_factory_home(env: Mapping[str, str]) -> Path:
    """Return droid's credential directory: ``.factory`` in $FACTORY_HOME_OVERRIDE, else in ~.

    droid reads ``FACTORY_HOME_OVERRIDE`` as a replacement for the user's home directory,
    not for the ``.factory`` directory in it.
    """
    override = env.get("FACTORY_HOME_OVERRIDE", "").strip()
    return (Path(override).expanduser() if override else _home(env)) / ".factory"


def channel_id(url: str, name: str | None = None) -> str:
    """Given an apprise URL and the channel's ``name:`` if it has one, return a short stable
    id that does not reveal the URL.

    A named channel is its name: a rotated token in its URL is the same channel, and the
    alerts it already had are not sent again. An unnamed one is its URL.
    """
    what = f"name\0{name}" if name is not None else url
    return "ch-" + hashlib.sha256(what.encode("utf-8")).hexdigest()[:12]


# --- loading -------------------------------------------------------------------------


def load_config(
    path: str | None,
    env: Mapping[str, str] = os.environ,
    *,
    remember_parsed: bool = False,
    always_warn: bool = False,
) -> Config:
    """Given ``--config`` (or None) and the environment, return the validated Config.

    With no explicit path the default location is used when it exists, and built-in
    defaults otherwise. ``remember_parsed`` keeps the parsed file for the next run (see
    :func:`_parse_remembered`) and that its exposure was reported (see
    :func:`_warn_if_exposed`); ``always_warn`` reports it even so. Raise ConfigError naming
    the file, each bad key and the fix.
    """
    explicit = path or env.get(CONFIG_ENV) or None
    file = Path(explicit).expanduser() if explicit else default_config_file(env)
    if not file.exists():
        if explicit:
            raise ConfigError(
                f"{file}: config file not found; create it (`factory-usage-alert init`) "
                "or fix --config / $" + CONFIG_ENV
            )
        return build_config({}, None, env)
    try:
        # Not blocking on a FIFO (a run must end by its deadline); a symlink is the user's own.
        text = safefile.read_regular(file, follow=True).decode("utf-8")
    except safefile.OddFile as exc:
        raise ConfigError(f"{file}: the config file is {exc.kind}; make it a regular file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read the config file ({exc.__class__.__name__})") from None
    config = build_config(_parse_remembered(text, file, env, remember_parsed), file, env)
    _warn_if_writable(file, env, remember=remember_parsed, always=always_warn)
    _warn_if_exposed(file, text, config, env, remember=remember_parsed, always=always_warn)
    _warn_deprecated(file, text, config, env, remember=remember_parsed, always=always_warn)
    return config


def parsed_cache_file(env: Mapping[str, str], file: Path) -> Path:
    """Return where the parsed copy of a config file is kept: under $XDG_CACHE_HOME."""
    base = env.get("XDG_CACHE_HOME") or str(_home(env) / ".cache")
    name = hashlib.sha256(str(file.resolve()).encode("utf-8")).hexdigest()[:16]
    return Path(base) / "factory-usage-alert" / f"config-{name}.json"


def _parse_remembered(text: str, file: Path, env: Mapping[str, str], remember: bool) -> dict:
    """Given a config file's text, return its parsed YAML, from the cache while the text is
    unchanged.

    Importing the YAML parser costs a quiet run more than anything else it does, and the
    file rarely changes. The cache holds the parsed text under its SHA-256 and this
    release's version (a copy an earlier release kept skipped checks added since), mode
    0600 in a 0700 directory of the user's own (the same secrets as the config, never more
    exposed); anything wrong with it (missing, stale, another release's, someone else's,
    open to others, not a regular file, not JSON) means "parse again". Only data that JSON
    represents exactly is cached, and only a real run (``remember``) writes the cache: a
    dry run or a check changes nothing.
    """
    import json

    from alerter import __version__

    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    cache = parsed_cache_file(env, file)
    try:
        remembered = json.loads(read_remembered(cache) or b"null")
    except ValueError:
        remembered = None
    if (
        isinstance(remembered, dict)
        and remembered.get("sha256") == digest
        and remembered.get("version") == __version__
        and isinstance(remembered.get("config"), dict)
    ):
        return remembered["config"]
    data = parse_yaml(text, file)
    try:
        exact = json.loads(json.dumps(data, allow_nan=False)) == data
    except (TypeError, ValueError):
        exact = False
    if exact and remember:
        kept = {"version": __version__, "sha256": digest, "config": data}
        remember_privately(cache, json.dumps(kept).encode("utf-8"))
    return data


# The parsed config is a few hundred values; a cache file larger than this is not ours.
_REMEMBERED_LIMIT = 4 << 20


def read_remembered(path: Path) -> bytes | None:
    """Given a file in the job's cache (a parsed config, a "said once" marker), return its
    bytes, or None when anything about it is wrong: missing, unreadable, not a regular file,
    a symlink, someone else's or open to others, in a directory that is (see ``safefile``)."""
    try:
        with safefile.private_dir(path.parent, create=False) as dir_fd:
            return safefile.read_in(dir_fd, path.name, _REMEMBERED_LIMIT)
    except FileNotFoundError:
        return None
    except OSError as exc:
        logging.getLogger(__name__).debug("ignoring %s (%s)", path, exc.strerror)
        return None


def remember_privately(path: Path, data: bytes) -> str | None:
    """Given a file in the job's cache and its bytes, replace it atomically, mode 0600 in a
    directory created 0700 at every level. Return None, or why it could not (a directory
    that is someone else's or open to others, a read-only home) and the fix, in words:
    failing is only slower, or said again, next time."""
    try:
        with safefile.private_dir(path.parent, create=True) as dir_fd:
            safefile.write_in(dir_fd, path.name, data)
    except OSError as exc:
        logging.getLogger(__name__).debug("not remembering %s (%s)", path, exc.strerror)
        return _cache_fix(path.parent, exc)
    return None


def _cache_fix(directory: Path, exc: OSError) -> str:
    quoted = shlex.quote(str(directory))
    if isinstance(exc, safefile.NotPrivate) and "open to others" in (exc.strerror or ""):
        return f"{directory} {exc.strerror}: run `chmod 700 {quoted}`"
    if isinstance(exc, safefile.NotPrivate):
        # Another user's cache in a shared XDG_CACHE_HOME, or one a `sudo` run left behind.
        return (
            f"{directory} {exc.strerror}: set XDG_CACHE_HOME to a directory of your own, or remove "
            f"it if it is a leftover (`sudo rm -r {quoted}`; the job makes its own)"
        )
    return (
        f"{directory} cannot be written ({exc.strerror or type(exc).__name__}): make it writable "
        "or set XDG_CACHE_HOME to a directory the job may write"
    )


def exposure_mark_file(env: Mapping[str, str], file: Path) -> Path:
    """Return where the job notes that a config file's exposure was reported (beside its parsed copy)."""
    return said_once_file(env, file, "exposure")


def said_once_file(env: Mapping[str, str], file: Path, what: str) -> Path:
    """Return where the job notes that ``what`` (exposure, deprecated, ...) was said about a
    config file, beside its parsed copy."""
    return parsed_cache_file(env, file).with_suffix(f".{what}")


def _said_before(env: Mapping[str, str], file: Path, what: str, mark: str, *, always: bool) -> bool:
    """Return True when ``what`` was said about the file as it is now (``mark``: a digest of
    what the warning depends on): a run every 15 minutes under cron must not mail it each
    time. ``always`` (check-config) says it whatever was said before."""
    return not always and read_remembered(said_once_file(env, file, what)) == mark.encode("ascii")


def _note_said(
    env: Mapping[str, str], file: Path, what: str, mark: str, *, remember: bool, said: bool = True
) -> None:
    """Note that ``what`` was said about the file as it is now (only a real run notes it).

    A warning that cannot be noted comes again on every run: that is said too, with the
    fix, or the promise "once per change of the file" would break without a word."""
    if not remember:
        return
    problem = remember_privately(said_once_file(env, file, what), mark.encode("ascii"))
    if problem is not None and said:
        logging.getLogger(__name__).warning(
            "the warning above will be said on every run: the job cannot note that it said it, as %s",
            problem,
        )


_ONCE = "said once per change of the file; `check-config` always says it"


def _warn_if_exposed(
    file: Path, text: str, config: Config, env: Mapping[str, str], *, remember: bool, always: bool
) -> None:
    """A config readable by others must not hold channel credentials: say so, once per
    change of the file (its text or its mode), and always when ``always``.

    Deciding whether a URL holds a credential needs apprise (see
    :func:`alerter.notify.carries_credentials`), so the answer is remembered, credentials
    or not, under a digest of the text and the mode: a steady run reads one small file.
    """
    try:
        mode = file.stat().st_mode
    except OSError:
        return
    # Every channel the file names: the top-level ones and each account's own.
    every = [*config.channels, *(ch for account in config.accounts for ch in account.config.channels)]
    channels = list({ch.id: ch for ch in every if ch.url}.values())
    if not mode & 0o044 or not channels:
        return
    mark = hashlib.sha256(f"{oct(mode & 0o7777)}\n{text}".encode()).hexdigest()
    if _said_before(env, file, "exposure", mark, always=always):
        return
    from alerter.notify import carries_credentials

    exposed = [ch.label for ch in channels if carries_credentials(ch.url or "")]
    if exposed:
        logging.getLogger(__name__).warning(
            "%s is readable by other users and holds credentials in %s; run `chmod 600 %s` (%s)",
            file,
            ", ".join(exposed),
            file,
            _ONCE,
        )
    _note_said(env, file, "exposure", mark, remember=remember, said=bool(exposed))


def _warn_if_writable(file: Path, env: Mapping[str, str], *, remember: bool, always: bool) -> None:
    """The config decides where the refresh token and the bearer token are sent: a file
    (or its directory) that someone else may change is said once per change of its owner
    or mode, and always when ``always``."""
    problems = []
    for path, what in ((file, "the config file"), (file.parent, "its directory")):
        try:
            info = path.stat()  # a symlinked config: what counts is the file it reaches
        except OSError:
            continue
        fix = f"chmod go-w {shlex.quote(str(path))}"
        if info.st_uid not in (0, os.geteuid()):
            problems.append(
                (
                    f"{what} {path} belongs to {_owner(info.st_uid)}",
                    f"chown {_owner(os.geteuid())} {shlex.quote(str(path))}",
                    info,
                )
            )
        elif info.st_mode & 0o022 and not (stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX):
            who = {0o020: "its group", 0o002: "others", 0o022: "its group and others"}[info.st_mode & 0o022]
            problems.append((f"{what} {path} is writable by {who}", fix, info))
    if not problems:
        return
    mark = hashlib.sha256(
        "\n".join(f"{p}:{i.st_uid}:{oct(i.st_mode)}" for p, _, i in problems).encode()
    ).hexdigest()
    if _said_before(env, file, "writable", mark, always=always):
        return
    for problem, fix, _ in problems:
        logging.getLogger(__name__).warning(
            "%s: someone else could change where the job sends droid's tokens; run `%s` (%s)",
            problem,
            fix,
            _ONCE,
        )
    _note_said(env, file, "writable", mark, remember=remember)


def _warn_deprecated(
    file: Path, text: str, config: Config, env: Mapping[str, str], *, remember: bool, always: bool
) -> None:
    """Keys of an earlier release still work; say each with its exact fix, once per change
    of the file (cron mails every warning), and always when ``always``."""
    if not config.deprecations:
        return
    mark = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if _said_before(env, file, "deprecated", mark, always=always):
        return
    for message in config.deprecations:
        logging.getLogger(__name__).warning("%s: %s (%s)", file, message, _ONCE)
    _note_said(env, file, "deprecated", mark, remember=remember)


def _owner(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


# A config is a few hundred values; aliases that expand to more are a mistake or an attack
# ("billion laughs": nine lines of aliases make 10**9 values, which the checks would walk).
MAX_CONFIG_VALUES = 100_000


def parse_yaml(text: str, file: Path | None) -> dict:
    """Given YAML text, return its top-level mapping. Raise ConfigError on bad YAML, on
    nesting too deep to read, on a number too long or a date impossible to read, and on
    aliases that expand to more than MAX_CONFIG_VALUES values."""
    import yaml

    where = str(file) if file else "config"
    try:
        data = yaml.load(text, Loader=_loader(yaml))  # noqa: S506 - a SafeLoader, see _loader
    except _DuplicateKey as exc:
        raise ConfigError(f"{where}: {exc}; keep one (YAML would silently use the last)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{where}: not valid YAML{line}; fix the syntax") from None
    except RecursionError:  # the parser recurses once per level of nesting
        raise ConfigError(f"{where}: nested too deeply to read; fix the syntax") from None
    except ValueError:  # an integer of over 4300 digits (int() refuses it), a date that is none
        raise ConfigError(
            f"{where}: holds a value YAML cannot read (a number thousands of digits long, or a date "
            "that does not exist); fix the value"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of keys, not a {_kind(data)}")
    if _too_many_values(data, MAX_CONFIG_VALUES):
        raise ConfigError(
            f"{where}: its aliases (*name) expand to more than {MAX_CONFIG_VALUES:,} values; "
            "write the config without them"
        )
    return data


class _DuplicateKey(Exception):
    """A mapping in the config gives one key twice."""


def _loader(yaml):  # noqa: ANN001, ANN202 - the yaml module, imported late (it is slow)
    """Return a SafeLoader that refuses a key given twice in one mapping.

    PyYAML keeps the last of two equal keys without a word, so a second ``thresholds:``
    further down would silently replace the first. Keys are compared as written, before
    ``<<`` merges, so a key that overrides a merged one is fine.
    """

    class Loader(yaml.SafeLoader):
        def compose_mapping_node(self, anchor):  # noqa: ANN001, ANN202
            node = super().compose_mapping_node(anchor)
            seen: dict[tuple[str, str], int] = {}
            for key, _ in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    continue
                line = key.start_mark.line + 1
                first = seen.get((key.tag, key.value))
                if first is not None:
                    name = redact(key.value, 40)
                    raise _DuplicateKey(f"the key {name!r} is given twice (lines {first} and {line})")
                seen[(key.tag, key.value)] = line
            return node

    return Loader


def _too_many_values(data: object, limit: int) -> bool:
    """Given parsed YAML, return whether it holds more than ``limit`` values once every alias
    is expanded (each shared or self-containing part counted as often as it is reached)."""
    count = 0
    pending = [data]
    while pending:
        value = pending.pop()
        count += 1
        if count > limit:
            return True
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, (list, tuple)):
            pending.extend(value)
    return False


def build_config(data: Mapping[str, Any], file: Path | None, env: Mapping[str, str]) -> Config:
    """Given the parsed YAML mapping, return a Config. Raise ConfigError listing every problem."""
    v = _Validator()
    v.keys(
        data,
        "",
        {
            "factory",
            "state_file",
            "thresholds",
            "severity",
            "notify",
            "healthcheck_url",
            "monitor",
            "quiet_hours",
            "prometheus_textfile",
            "forecast",
            "extra_usage",
            "accounts",
        },
    )

    factory = v.mapping(data, "factory")
    v.keys(
        factory,
        "factory.",
        {
            "base_url",
            "home",
            "timeout_seconds",
            "deadline_seconds",
            "workos_url",
            "refresh_margin_hours",
            "endpoint",
            "source",
            "ca_bundle",
        },
    )
    base_url = v.url(factory, "factory.base_url", DEFAULT_BASE_URL)
    workos_url = v.url(factory, "factory.workos_url", DEFAULT_WORKOS_URL)
    home = v.path(factory, "factory.home") or default_factory_home(env)
    timeout = v.number(factory, "factory.timeout_seconds", 10.0, 0.1, 300)
    deadline = v.number(factory, "factory.deadline_seconds", 60.0, 1, 3600)
    if "refresh_margin_hours" in factory:
        v.deprecated(
            "factory.refresh_margin_hours is no longer used (droid's login is renewed only when it "
            f"is about to expire); delete the line `refresh_margin_hours: {factory['refresh_margin_hours']}`"
        )
    if "source" in factory and "endpoint" not in factory:
        endpoint = v.choice(factory, "factory.source", "auto", ENDPOINTS)
        v.deprecated(
            "factory.source is now factory.endpoint; "
            f"replace `source: {endpoint}` with `endpoint: {endpoint}`"
        )
    else:
        endpoint = v.choice(factory, "factory.endpoint", "auto", ENDPOINTS)
    ca_bundle = v.path(factory, "factory.ca_bundle")

    state_file = v.path(data, "state_file")
    # Only the default path takes over a state an earlier release kept elsewhere; a path
    # the config names is the user's own choice. A unit of an earlier release (not copied
    # again after the upgrade) still keeps its state where its StateDirectory= says: its
    # runs merge what the shared state says was sent too, or an alert a run by hand sent
    # would come again from the timer (and the other way round, by the same merge).
    old_unit_state = False
    if state_file:
        earlier: tuple[Path, ...] = ()
    elif env.get("STATE_DIRECTORY"):
        earlier = earlier_state_files(env, _user_name())
        old_unit_state = default_state_file(env) in earlier
        shared = default_state_file({k: v for k, v in env.items() if k != "STATE_DIRECTORY"})
        earlier = (shared, *earlier) if old_unit_state else ()
    else:
        earlier = earlier_state_files(env, _user_name())
    state_file = state_file or default_state_file(env)

    thresholds = _thresholds(v, data)

    severity = v.mapping(data, "severity")
    v.keys(severity, "severity.", {"warning_at", "critical_at"})
    warning_at = v.number(severity, "severity.warning_at", 80.0, 1, 1000)
    critical_at = v.number(severity, "severity.critical_at", 100.0, 1, 1000)

    channels = _channels(v, v.mapping(data, "notify"))
    forecast = _forecast(v, v.mapping(data, "forecast"))

    healthcheck_url = (
        v.url(data, "healthcheck_url", None) if data.get("healthcheck_url") is not None else None
    )
    monitor = _monitor(v, data)
    quiet_hours = _quiet_hours(v, data)
    textfile = v.path(data, "prometheus_textfile")
    if textfile is not None and textfile.suffix != ".prom":
        v.problem(
            "prometheus_textfile", "must end in .prom (node_exporter's textfile collector reads only those)"
        )

    extra = v.mapping(data, "extra_usage")
    v.keys(extra, "extra_usage.", {"low_balance_usd"})
    low_balance = (
        v.number(extra, "extra_usage.low_balance_usd", 0.0, 0, 1_000_000)
        if extra.get("low_balance_usd") is not None
        else None
    )

    if v.problems:
        where = str(file) if file else "config"
        raise ConfigError(f"{where}: " + "; ".join(v.problems), problems=v.problems, file=file)
    config = Config(
        path=file,
        base_url=base_url.rstrip("/"),
        base_url_configured="base_url" in factory,
        home=home,
        timeout_seconds=timeout,
        deadline_seconds=deadline,
        workos_url=workos_url.rstrip("/"),
        endpoint=endpoint,
        ca_bundle=str(ca_bundle) if ca_bundle else None,
        state_file=state_file,
        earlier_state_files=earlier,
        old_unit_state=old_unit_state,
        thresholds=thresholds,
        warning_at=warning_at,
        critical_at=critical_at,
        channels=channels,
        forecast=forecast,
        healthcheck_url=healthcheck_url.rstrip("/") if healthcheck_url else None,
        monitor=monitor,
        quiet_hours=quiet_hours,
        prometheus_textfile=textfile,
        low_balance_usd=low_balance,
        deprecations=tuple(dict.fromkeys(v.deprecations)),
    )
    if data.get("accounts") is None:
        return config
    accounts = _accounts(data, config, file, env)
    # An account's config merges the top-level sections: the same old key, said once.
    every = [*config.deprecations, *(d for account in accounts for d in account.config.deprecations)]
    return dataclasses.replace(config, accounts=accounts, deprecations=tuple(dict.fromkeys(every)))


ACCOUNT_KEYS = {
    "name",
    "api_key_env",
    "factory_home",
    "thresholds",
    "forecast",
    "notify",
    "factory",
    "extra_usage",
}
_ACCOUNT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")


def is_account_name(name: object) -> bool:
    """Given a value, say whether it can name an account (it names a state file too)."""
    return isinstance(name, str) and _ACCOUNT_NAME.fullmatch(name) is not None


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _shared_droid_home(home: Path, name: str, homes: dict[object, str]) -> str | None:
    """Given an account's ``factory_home``, return the account already reading the same
    droid store, else None (and remember this one's).

    The store directory is compared by its real path and, when it exists, by device and
    inode: a symlink, a ``..`` or a bind mount cannot make one store look like two.
    """
    store = home / ".factory"
    keys: list[object] = [("store", os.path.realpath(store))]
    for what, place in (("store", store), ("home", home)):
        try:
            st = os.stat(place)
        except OSError:
            continue
        keys.append((what, st.st_dev, st.st_ino))
    for key in keys:
        if homes.get(key, name) != name:
            return homes[key]
    for key in keys:
        homes.setdefault(key, name)
    return None


def _accounts(data: Mapping[str, Any], base: Config, file: Path | None, env: Mapping[str, str]) -> tuple:
    """Given the whole parsed config and its Config without accounts, return each account's
    Account. Raise ConfigError listing every problem as ``At 'accounts[i].key'``.

    An account's Config is the top level with its own keys over it: ``thresholds``,
    ``forecast`` and ``extra_usage`` key by key, ``notify`` as a whole (its routing),
    ``factory`` only its ``base_url``. Its state file is ``state-<name>.json`` beside the
    default one, so each account has its own alerts, history and lock.
    """
    v = _Validator()
    entries = data.get("accounts")
    if not isinstance(entries, list) or not entries:
        v.problem(
            "accounts",
            "must be a non-empty list of accounts (name + api_key_env or factory_home), "
            f"not {_kind(entries)}",
        )
        entries = []
    accounts: list[Account] = []
    seen: set[str] = set()
    homes: dict[object, str] = {}  # droid store directory (real path, device+inode) -> its account
    top = {k: val for k, val in data.items() if k != "accounts"}
    for i, entry in enumerate(entries):
        where = f"accounts[{i}]"
        if not isinstance(entry, dict):
            v.problem(where, "must be a mapping with `name` and `api_key_env` or `factory_home`")
            continue
        v.keys(entry, where + ".", ACCOUNT_KEYS)
        name = entry.get("name")
        if not is_account_name(name):
            v.problem(
                where + ".name",
                "must be a short name of letters, digits, '.', '_' or '-' (it names the state file), "
                f"not {_shown(name)}",
            )
            continue
        if name in seen:
            v.problem(where + ".name", f"{name!r} names another account too; give each its own name")
            continue
        seen.add(name)
        key_env, home_dir = entry.get("api_key_env"), entry.get("factory_home")
        if (key_env is None) == (home_dir is None):
            v.problem(
                where,
                "needs exactly one login: `api_key_env` (a variable holding an fk- key) or `factory_home`",
            )
            continue
        if key_env is not None and (not isinstance(key_env, str) or not _ENV_NAME.fullmatch(key_env)):
            hint = (
                " (the key itself never goes into the config)"
                if isinstance(key_env, str) and key_env.startswith("fk-")
                else ""
            )
            v.problem(
                where + ".api_key_env", f"must name an environment variable like WORK_FACTORY_KEY{hint}"
            )
            continue
        home = v.path(entry, where + ".factory_home") if home_dir is not None else None
        if home_dir is not None and home is None:
            continue
        if home is not None:
            same = _shared_droid_home(home, name, homes)
            if same is not None:
                # One droid login, renewed by two runs at once, and every alert told twice.
                v.problem(where + ".factory_home", f"is account {same!r}'s droid home too; give each its own")
                continue
        merged = dict(top)
        for section in ("thresholds", "forecast", "extra_usage"):
            if section in entry:
                own = v.mapping(entry, f"{where}.{section}")
                merged[section] = {**(top.get(section) or {}), **own}
        if "notify" in entry:
            merged["notify"] = entry["notify"]
        own_factory = v.mapping(entry, where + ".factory")
        v.keys(own_factory, where + ".factory.", {"base_url"})
        if "base_url" in own_factory:
            merged["factory"] = {**(top.get("factory") or {}), "base_url": own_factory["base_url"]}
        try:
            own = build_config(merged, file, env)
        except ConfigError as exc:
            for problem in exc.problems:
                v.problems.append(problem.replace("At '", f"At '{where}.", 1))
            continue
        login: dict[str, Any] = (
            {"api_key_env": key_env, "droid_store": False}
            if key_env is not None
            else {"api_key_env": None, "droid_store": True, "home": home / ".factory"}
        )
        own = dataclasses.replace(
            own,
            account=name,
            state_file=base.state_file.with_name(f"state-{name}.json"),
            # The login the job watched before `accounts:` decides which account takes over
            # its state (not the order of the list), so moving to accounts repeats no alert.
            earlier_state_files=(),
            login_states=(base.state_file, *base.earlier_state_files),
            first_account=not accounts,
            **login,
        )
        accounts.append(Account(name, key_env, home, own))
    if v.problems:
        where = str(file) if file else "config"
        raise ConfigError(f"{where}: " + "; ".join(v.problems), problems=v.problems, file=file)
    return tuple(accounts)


def _monitor(v: _Validator, data: Mapping[str, Any]) -> MonitorSettings:
    section = v.mapping(data, "monitor")
    v.keys(
        section,
        "monitor.",
        {"failures_before_alert", "hours_without_success", "reset_notice", "reminder_hours"},
    )
    return MonitorSettings(
        failures_before_alert=int(
            v.number(section, "monitor.failures_before_alert", 3, 1, 1000, integer=True)
        ),
        hours_without_success=v.number(section, "monitor.hours_without_success", 0, 0, 24 * 90),
        reset_notice=v.boolean(section, "monitor.reset_notice", False),
        reminder_hours=v.number(section, "monitor.reminder_hours", 0, 0, 24 * 90),
    )


def _quiet_hours(v: _Validator, data: Mapping[str, Any]) -> QuietHours | None:
    if data.get("quiet_hours") is None:
        return None
    section = v.mapping(data, "quiet_hours")
    v.keys(section, "quiet_hours.", {"start", "end"})
    start = v.clock_time(section, "quiet_hours.start")
    end = v.clock_time(section, "quiet_hours.end")
    if start is None or end is None:
        return None
    if start == end:
        v.problem("quiet_hours", "start and end are the same time; remove quiet_hours to turn it off")
        return None
    return QuietHours(start, end)


def _thresholds(v: _Validator, data: Mapping[str, Any]) -> dict[str, tuple[float, ...]]:
    section = v.mapping(data, "thresholds")
    v.keys(section, "thresholds.", {"default", *METER_IDS})
    result = {"default": DEFAULT_THRESHOLDS}
    for key, value in section.items():
        if key not in ("default", *METER_IDS):
            continue
        name = f"thresholds.{key}"
        if not isinstance(value, list) or not value:
            v.problem(
                name, f"must be a non-empty list of percents like [50, 80, 95, 100], not {_kind(value)}"
            )
            continue
        percents = []
        for item in value:
            if not is_number(item) or not 1 <= item <= 1000:
                v.problem(name, f"{_shown(item)} is not a percent between 1 and 1000")
            else:
                percents.append(float(item))
        result[key] = tuple(sorted(set(percents)))
    return result


RULE_KEYS = {"long_hours", "short_hours", "burn_rate", "hold_hours", "within_hours"}


def _forecast(v: _Validator, section: Mapping[str, Any]) -> ForecastSettings:
    v.keys(
        section,
        "forecast.",
        {
            "enabled",
            "severity",
            "min_elapsed_percent",
            "min_elapsed_share",
            "noise_margin",
            "rearm_below_percent",
            "rules",
        },
    )
    enabled = v.boolean(section, "forecast.enabled", True)
    severity = v.choice(section, "forecast.severity", "warning", SEVERITIES)
    # Every share in the config is a percent; the share of earlier releases is still read.
    # One number sets every window kind; a mapping sets the kinds it names.
    min_elapsed = dict(DEFAULT_MIN_ELAPSED)
    if "min_elapsed_share" in section and "min_elapsed_percent" not in section:
        min_share = v.number(section, "forecast.min_elapsed_share", 0.1, 0, 0.9)
        v.deprecated(
            "forecast.min_elapsed_share is now forecast.min_elapsed_percent; replace "
            f"`min_elapsed_share: {min_share:g}` with `min_elapsed_percent: {min_share * 100:g}`"
        )
        min_elapsed = dict.fromkeys(WINDOW_KINDS, min_share)
    else:
        percents = _per_kind(
            v, section, "min_elapsed_percent", {k: 100 * x for k, x in min_elapsed.items()}, 90
        )
        min_elapsed = {kind: percent / 100 for kind, percent in percents.items()}
    noise_margin = _per_kind(v, section, "noise_margin", DEFAULT_NOISE_MARGIN, 5)
    rearm = v.number(section, "forecast.rearm_below_percent", 90.0, 1, 100)
    rules = dict(DEFAULT_RULES)
    section_rules = v.mapping(section, "forecast.rules")
    v.keys(section_rules, "forecast.rules.", set(WINDOW_KINDS))
    for kind in WINDOW_KINDS:
        if kind not in section_rules:
            continue
        name = f"forecast.rules.{kind}"
        items = section_rules[kind]
        if items is None:
            items = []
        if not isinstance(items, list):
            v.problem(name, f"must be a list of rules (or [] for none), not {_kind(items)}")
            continue
        parsed = []
        for i, item in enumerate(items):
            where = f"{name}[{i}]"
            if not isinstance(item, dict):
                v.problem(where, "must be a mapping with long_hours, short_hours and burn_rate")
                continue
            v.keys(item, where + ".", RULE_KEYS)
            missing = [k for k in ("long_hours", "short_hours") if k not in item]
            for key in missing:
                v.problem(f"{where}.{key}", "is required")
            if missing:
                continue
            long = v.number(item, f"{where}.long_hours", 168.0, 0.05, 24 * 62)
            short = v.number(item, f"{where}.short_hours", 24.0, 0.01, 24 * 62)
            burn = v.number(item, f"{where}.burn_rate", 1.0, 0.1, 100)
            hold = v.number(item, f"{where}.hold_hours", 0.0, 0, 24 * 31)
            within = v.number(item, f"{where}.within_hours", 0.0, 0, 24 * 62)
            if short >= long:
                v.problem(f"{where}.short_hours", f"must be shorter than long_hours ({long:g})")
                continue
            parsed.append(Rule(long * 3600, short * 3600, burn, hold * 3600, within * 3600))
        rules[kind] = tuple(parsed)
    return ForecastSettings(
        enabled=enabled,
        severity=severity,
        min_elapsed=min_elapsed,
        rearm_below=rearm / 100,
        rules=rules,
        noise_margin=noise_margin,
    )


def _per_kind(
    v: _Validator, section: Mapping[str, Any], key: str, defaults: Mapping[str, float], top: float
) -> dict[str, float]:
    """Given the forecast section, return ``key``'s number per window kind: one number sets
    every kind, a mapping the kinds it names; the others keep their defaults."""
    result = dict(defaults)
    name = f"forecast.{key}"
    if isinstance(section.get(key), dict):
        per_kind = section[key]
        v.keys(per_kind, name + ".", set(WINDOW_KINDS))
        for kind in WINDOW_KINDS:
            if kind in per_kind:
                result[kind] = v.number(per_kind, f"{name}.{kind}", result[kind], 0, top)
    elif key in section:
        result = dict.fromkeys(WINDOW_KINDS, v.number(section, name, 0.0, 0, top))
    return result


def _channels(v: _Validator, notify: Mapping[str, Any]) -> tuple[Channel, ...]:
    v.keys(notify, "notify.", {"urls", "channels"})
    channels: list[Channel] = []
    urls = notify.get("urls", [])
    if not isinstance(urls, list):
        v.problem("notify.urls", f"must be a list of apprise URLs, not {_kind(urls)}")
        urls = []
    keys: list[str] = []  # where each channel is in the config, to tell alike ones apart
    named: list[bool] = []
    for i, url in enumerate(urls):
        if v.apprise_url(url, f"notify.urls[{i}]"):
            channels.append(Channel(id=channel_id(url), label=mask_url(url), url=url))
            keys.append(f"notify.urls[{i}]")
            named.append(False)
    routed = notify.get("channels", [])
    if not isinstance(routed, list):
        v.problem("notify.channels", f"must be a list of channels, not {_kind(routed)}")
        routed = []
    for i, item in enumerate(routed):
        name = f"notify.channels[{i}]"
        if not isinstance(item, dict):
            v.problem(name, "must be a mapping with `url` (and optional name, severities, tags)")
            continue
        v.keys(item, name + ".", {"url", "name", "severities", "tags"})
        url = item.get("url")
        if url is None:
            v.problem(name + ".url", "is required")
            continue
        if not v.apprise_url(url, name + ".url"):
            continue
        severities = item.get("severities", list(SEVERITIES))
        if not isinstance(severities, list) or not severities or not all(s in SEVERITIES for s in severities):
            v.problem(name + ".severities", f"must be a list drawn from {list(SEVERITIES)}")
            severities = list(SEVERITIES)
        tags = item.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            v.problem(name + ".tags", "must be a list of words")
            tags = []
        label = item.get("name")
        if label is not None and (not isinstance(label, str) or not label.strip() or "://" in label):
            v.problem(name + ".name", "must be a short text naming the channel (not its URL)")
            label = None
        label = " ".join(label.split()) if label else None
        channels.append(
            Channel(
                id=channel_id(url, label),
                label=label or mask_url(url),
                url=url,
                severities=frozenset(severities),
                tags=tuple(tags),
            )
        )
        keys.append(name)
        named.append(label is not None)
    return _distinct(v, channels, keys, named)


def _distinct(
    v: _Validator, channels: list[Channel], keys: list[str], named: list[bool]
) -> tuple[Channel, ...]:
    """Return the channels with a URL listed twice dropped (a problem) and every label
    telling its channel apart: a name used twice is a problem, and unnamed channels that
    mask alike (two ``slack://***``) are labelled with where they are in the config."""
    seen: set[str] = set()
    unique: list[tuple[Channel, str, bool]] = []
    for ch, key, has_name in zip(channels, keys, named, strict=True):
        if ch.url in seen:
            v.problem(key, f"the URL of {ch.label} is listed twice; keep one")
            continue
        seen.add(ch.url or ch.id)
        unique.append((ch, key, has_name))
    counts: dict[str, int] = {}
    for ch, _, _ in unique:
        counts[ch.label] = counts.get(ch.label, 0) + 1
    result = []
    for ch, key, has_name in unique:
        if counts[ch.label] > 1 and has_name:
            v.problem(key + ".name", f"{ch.label!r} names another channel too; give each its own name")
        elif counts[ch.label] > 1:
            ch = dataclasses.replace(ch, label=f"{ch.label} ({key})")
        result.append(ch)
    return tuple(result)


# --- small validation helpers ----------------------------------------------------------


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "mapping", list: "list", str: "text", bool: "true/false"}.get(
        type(value), type(value).__name__
    )


def _shown(value: Any) -> str:
    """Given a value from the config, return it quoted for a message, with secrets masked.

    A misplaced value may be an apprise URL or a key: a URL is masked (``mask_url``), text
    that could be part of one (a ``/``, ``@``, ``?`` or ``=``: a URL with its scheme
    mistyped, a ping key's path) is not shown at all, whatever its length, other text goes
    through ``redact`` (tokens replaced), and a list or mapping, which could hold
    anything, is only named.
    """
    if isinstance(value, str):
        if "://" in value or any(c in value for c in "/@?="):
            return repr(mask_url(value))
        return repr(redact(value, 60))
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    return _kind(value)


# A key named like a credential: a new user's first guess at where the API key goes.
_CREDENTIAL_KEY = re.compile(r"(^|_)(api_?key|key|token|secret|password)$", re.IGNORECASE)


def _unknown_key(key: str, allowed: set[str]) -> str:
    """Given a key that is not allowed and the keys that are, return what to say about it:
    the nearest allowed key when one is close (a typo), where a key belongs if it is named
    like a credential (never in the config), and every allowed key."""
    import difflib  # only on the error path

    choices = ", ".join(sorted(allowed))
    hint = ""
    if _CREDENTIAL_KEY.search(key) and "api_key_env" not in allowed:
        hint = "; an API key goes in the environment ($FACTORY_API_KEY), never in the config"
    elif _CREDENTIAL_KEY.search(key):
        hint = "; api_key_env names the environment variable that holds the key, never the key"
    near = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.8)
    guess = f" (did you mean '{near[0]}'?)" if near else ""
    return f"unknown key{guess}{hint}; expected one of: {choices}"


class _Validator:
    """Collects every problem instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.deprecations: list[str] = []

    def deprecated(self, message: str) -> None:
        """Note a key of an earlier release that is still read; ``message`` names the fix."""
        self.deprecations.append(message)

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"At '{key}': {message}")

    def keys(self, section: Mapping[str, Any], prefix: str, allowed: set[str]) -> None:
        for key in section:
            if key not in allowed:
                self.problem(f"{prefix}{redact(str(key), 60)}", _unknown_key(str(key), allowed))

    def mapping(self, data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = data.get(key.rsplit(".", 1)[-1])
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(key, f"must be a mapping of keys, not {_kind(value)}")
            return {}
        return value

    def number(
        self,
        data: Mapping[str, Any],
        key: str,
        default: float,
        low: float,
        high: float,
        integer: bool = False,
    ) -> float:
        value = data.get(key.rsplit(".", 1)[-1], default)
        if not is_number(value) or not low <= value <= high or (integer and value != int(value)):
            kind = "a whole number" if integer else "a number"
            self.problem(key, f"must be {kind} from {low:g} to {high:g}, not {_shown(value)}")
            return default
        return float(value)

    def boolean(self, data: Mapping[str, Any], key: str, default: bool) -> bool:
        value = data.get(key.rsplit(".", 1)[-1], default)
        if not isinstance(value, bool):
            self.problem(key, f"must be true or false, not {_shown(value)}")
            return default
        return value

    def clock_time(self, data: Mapping[str, Any], key: str) -> int | None:
        value = data.get(key.rsplit(".", 1)[-1])
        if isinstance(value, int) and not isinstance(value, bool) and 60 <= value < 24 * 60:
            # YAML 1.1 reads an unquoted 22:00 as the base-60 number 1320: minutes already.
            # A bare 22 (or 0:22) is ambiguous and falls through to the error below.
            return value
        match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", value) if isinstance(value, str) else None
        if match is None:
            self.problem(key, f'must be a local time like "22:00", not {_shown(value)}')
            return None
        return int(match.group(1)) * 60 + int(match.group(2))

    def choice(self, data: Mapping[str, Any], key: str, default: str, choices: tuple[str, ...]) -> str:
        value = data.get(key.rsplit(".", 1)[-1], default)
        if value not in choices:
            self.problem(key, f"must be one of {', '.join(choices)}, not {_shown(value)}")
            return default
        return value

    def url(self, data: Mapping[str, Any], key: str, default: Any) -> Any:
        value = data.get(key.rsplit(".", 1)[-1], default)
        if not isinstance(value, str) or not re.fullmatch(r"https?://[^\s/]+\S*", value):
            self.problem(key, f"must be an http(s) URL, not {_shown(value)}")
            return default
        if value.startswith("http://") and not is_loopback_url(value):
            # Plain http would send the bearer token, a refresh token or a ping key in the
            # clear; the stand-ins used in tests and local proxies live on loopback.
            self.problem(
                key,
                f"use https:// ({_shown(value)} is plain http://, "
                "which is allowed only to 127.0.0.0/8, ::1 or localhost)",
            )
            return default
        return value

    def path(self, data: Mapping[str, Any], key: str) -> Path | None:
        value = data.get(key.rsplit(".", 1)[-1])
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.problem(key, f"must be a file system path, not {_kind(value)}")
            return None
        try:
            return Path(os.path.expandvars(value)).expanduser()
        except RuntimeError:  # ~name of a user this system does not have
            self.problem(key, "starts with ~ and a user this system does not have; give the path in full")
            return None

    def apprise_url(self, url: Any, key: str) -> bool:
        # A cheap syntax check here; apprise itself parses the URLs once per config
        # change (see notify.validate_channels), since importing it costs ~0.25 s.
        if not isinstance(url, str) or not _URL_SCHEME.match(url.strip()):
            self.problem(key, "is not an apprise URL (expected scheme://...)")
            return False
        return True
