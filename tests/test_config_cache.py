"""The parsed config is remembered between runs, so that a quiet run need not import the
YAML parser; the remembered copy never outlives an edit and is as private as can be."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from alerter.config import parsed_cache_file
from tests.conftest import python_path, same_clock, usage_body

ROOT = Path(__file__).resolve().parent.parent
M = 1_000_000


def cache_of(app) -> Path:
    return parsed_cache_file(app.env, app.config_path)


def test_a_run_remembers_the_parsed_config_privately_and_a_dry_run_does_not(app):
    app.serve_usage(usage_body(M))
    assert app("run", "--dry-run").code == 0
    assert not cache_of(app).exists()
    assert app("run").code == 0
    cache = cache_of(app)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.parent.stat().st_mode) == 0o700
    remembered = json.loads(cache.read_text())
    assert remembered["config"]["factory"]["base_url"] == app.factory.url


def test_an_edited_config_is_parsed_again_and_a_broken_cache_is_ignored(app):
    app.serve_usage(usage_body(17 * M))  # 85 %
    app.write_config({"thresholds": {"default": [90]}})
    assert app("run").code == 0
    assert "would send" not in app("run", "--dry-run").out  # nothing due below 90 %
    app.write_config({"thresholds": {"default": [80]}})  # the edit must count at once
    assert "[dry-run] would send" in app("run", "--dry-run").out
    cache_of(app).write_text("{not json")
    assert "[dry-run] would send" in app("run", "--dry-run").out
    remembered = {"sha256": "0" * 64, "config": {"thresholds": {"default": [99]}}}
    cache_of(app).write_text(json.dumps(remembered))  # a stale copy is not used
    assert "[dry-run] would send" in app("run", "--dry-run").out


def test_the_steady_path_does_not_import_the_yaml_parser(app):
    app.serve_usage(usage_body(M))
    env = {**app.env, **same_clock(), "PYTHONPATH": python_path(str(ROOT))}
    argv = [sys.executable, "-X", "importtime", "-m", "alerter", "run", "--config", str(app.config_path)]
    first = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert first.returncode == 0, first.stderr
    assert "| yaml" in first.stderr or " yaml\n" in first.stderr
    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert second.returncode == 0, second.stderr
    assert not any(line.rstrip().endswith(" yaml") for line in second.stderr.splitlines())
    assert os.environ.get("XDG_CACHE_HOME") is None or "XDG_CACHE_HOME" not in env
