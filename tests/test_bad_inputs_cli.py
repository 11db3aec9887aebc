"""Bad inputs on the command line and in endpoint configuration files: each is a clear message
naming the cause (and the key, for a config file), a non-zero exit, and never a traceback.

The ``volley`` command runs as a subprocess, as a user runs it, in a fresh ``VOLLEY_HOME`` with
no local stack (more bad config values, parsed in-process: tests/test_endpoint_config.py).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from volley.endpoint.config import ConfigError, parse_config


def volley(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VOLLEY_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "volley.cli", *args], cwd=home, env=env, text=True,
                          capture_output=True, timeout=120, stdin=subprocess.DEVNULL)


def assert_clean_failure(r: subprocess.CompletedProcess[str], rc: int, *words: str) -> None:
    out = r.stdout + r.stderr
    assert r.returncode == rc, out
    assert "Traceback" not in out, out
    assert "Error: " in r.stderr, out
    for w in words:
        assert w in out, out


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    (tmp_path / "settings.json").write_text("{not json")
    return tmp_path


ARGS = {
    "unknown-command": (["nonexistent"], 2, ["No such command 'nonexistent'"]),
    "unknown-option": (["local", "status", "--bogus"], 2, ["No such option '--bogus'"]),
    "token-create-no-user": (["token", "create"], 2, ["Missing option '--user'"]),
    "token-ttl-not-a-number": (["token", "create", "--user", "x", "--ttl-days", "abc"], 2,
                               ["'--ttl-days'", "not a valid float"]),
    "token-revoke-too-short": (["token", "revoke", "abc"], 1, ["at least 6 characters"]),
    "token-bad-database-url": (["token", "list", "--database-url", "not-a-url"], 1, ["cannot list tokens"]),
    "token-missing-service-config": (["token", "revoke", "vly_abcdefgh", "--service-config", "/nonexistent"], 2,
                                     ["'--service-config'", "does not exist"]),
    "endpoint-bad-name": (["endpoint", "configure", "a/b"], 2, ["invalid endpoint name 'a/b'"]),
    "endpoint-bad-engine": (["endpoint", "configure", "x", "--engine", "Nope"], 2, ["'Nope' is not one of"]),
    "endpoint-negative-workers": (["endpoint", "configure", "y", "--max-workers", "-3"], 2, ["'--max-workers'", "x>=1"]),
    "endpoint-start-unknown": (["endpoint", "start", "nope"], 1, ["no endpoint 'nope'", "volley endpoint configure nope"]),
    "endpoint-stop-unknown": (["endpoint", "stop", "nope"], 1, ["no endpoint 'nope'"]),
    "endpoint-delete-unknown": (["endpoint", "delete", "nope"], 1, ["no endpoint 'nope'"]),
    "demo-bad-transport": (["demo", "--transport", "bogus"], 2, ["'bogus' is not one of"]),
}


@pytest.mark.parametrize("case", list(ARGS))
def test_bad_arguments_are_a_clear_message_and_exit(home: Path, case: str) -> None:
    args, rc, words = ARGS[case]
    assert_clean_failure(volley(home, *args), rc, *words)


@pytest.mark.parametrize("command", [["token", "list"], ["token", "create", "--user", "x"],
                                     ["token", "revoke", "vly_abcdefgh"]])
def test_token_commands_without_a_local_stack_say_so_and_create_nothing(home: Path, command: list[str]) -> None:
    (home / "service").mkdir()  # a directory, as a half-made stack leaves, but no database
    r = volley(home, *command)
    assert_clean_failure(r, 1, "no local stack database", "volley local up", "--database-url")
    assert not (home / "service" / "service.db").exists()


# --- endpoint config files, through `volley endpoint start` ----------------------------------------
CONFIGS = {
    "bad-yaml": ("engine: [unclosed\n", ["not valid YAML"]),
    "unknown-key": ("engine: {type: ThreadPoolEngine}\nbogus_key: 1\n", ["unknown key 'bogus_key'"]),
    "bad-value": ("engine: {type: ThreadPoolEngine}\nheartbeat_period: 0\n", ["heartbeat_period must be at least"]),
    "wrong-type": ("engine: {type: ThreadPoolEngine}\nprefetch: [1]\n", ["prefetch must be an integer"]),
    "engine-wrong-type": ("engine: {type: ThreadPoolEngine, max_workers: two}\n", ["engine.max_workers"]),
    "not-a-mapping": ("- a\n- b\n", ["expected a mapping"]),
    "python-tag": ("engine: !!python/object/apply:os.system ['echo owned']\n", ["not valid YAML", "python/object"]),
    "nested-deep": ("engine: " + "[" * 5000 + "]" * 5000 + "\n", ["nested too deeply"]),
    "not-a-number": ("engine: {type: ThreadPoolEngine}\nheartbeat_period: .nan\n", ["heartbeat_period", "nan"]),
    "not-utf8": (b"display_name: \xff\xfe\n", ["not UTF-8"]),
}


@pytest.mark.parametrize("case", list(CONFIGS))
def test_bad_endpoint_config_file_names_the_file_and_key(home: Path, case: str) -> None:
    text, words = CONFIGS[case]
    d = home / "endpoints" / "ep"
    d.mkdir(parents=True)
    cfg = d / "config.yaml"
    cfg.write_bytes(text if isinstance(text, bytes) else text.encode())
    r = volley(home, "endpoint", "start", "ep")
    assert_clean_failure(r, 1, str(cfg), *words)
    assert not (d / "endpoint.json").exists()  # it registered nothing


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
@pytest.mark.parametrize("key", ["heartbeat_period", "shutdown_grace"])
def test_config_numbers_must_be_finite(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"{key} must be a finite number"):
        parse_config(f"{key}: {value}\n", "config.yaml")
    assert math.isfinite(parse_config(f"{key}: 5\n", "config.yaml").heartbeat_period)
