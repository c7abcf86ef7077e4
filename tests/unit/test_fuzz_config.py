"""Fuzzing the config loader: any YAML file, any environment -> Settings or ConfigError.

``load_settings`` is the first thing every command runs; whatever an operator (or a broken
editor, or a truncated copy) leaves in the config file or the environment must end in one
ConfigError line (exit 2), never in a traceback.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sbbackup.config import KEYS, SECTIONS, Settings, load_settings
from sbbackup.errors import ConfigError

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
WORK = Path(tempfile.mkdtemp(prefix="sbbackup-fuzz-config-"))
ENV_NAMES = sorted({k.env for k in KEYS if k.env} | {"SBBACKUP_CONFIG"})
KEY_NAMES = sorted({k.path[1] for k in KEYS})
HUGE = "9" * 5000  # an integer past Python's int/str conversion limit (4300 digits)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, 1, -1, 22, 23, 65536, 36501, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["true", "no", "plain", "custom", "sqlite:///x.db", "postgresql://h/db", ""]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
sections = st.dictionaries(
    st.sampled_from(sorted(SECTIONS)) | st.text(max_size=8),
    st.none()
    | values
    | st.dictionaries(st.sampled_from(KEY_NAMES) | st.text(max_size=8), values, max_size=6),
    max_size=6,
)


def as_yaml(doc: Any) -> bytes:
    return yaml.safe_dump(doc, allow_unicode=True).encode()


contents = st.one_of(
    sections.map(as_yaml),
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    st.integers(1, 3000).map(lambda n: ("[" * n + "]" * n).encode()),
    st.integers(1, 3000).map(lambda n: ("backup: " + "{a: " * n + "1" + "}" * n).encode()),
    st.sampled_from(["path", "retentionDays", "compressionLevel"]).map(
        lambda key: f"backup:\n  {key}: {HUGE}\n".encode()
    ),
    st.tuples(sections.map(as_yaml), st.integers(0, 200), st.binary(min_size=1, max_size=4)).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :]
    ),
)
env_values = st.text(max_size=40).filter(lambda s: "\0" not in s)  # the OS never passes a NUL
environments = st.dictionaries(
    st.sampled_from(ENV_NAMES), env_values | st.sampled_from(["1", "0", "yes", HUGE])
)
# Where the config file is said to be: the written file, or one that is not a readable file.
locations = st.sampled_from(["file", "missing", "directory", "tilde-user", "nul"])


def config_path(where: str, data: bytes) -> str:
    if where == "file":
        fd, name = tempfile.mkstemp(suffix=".yaml", dir=WORK)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return name
    return {
        "missing": str(WORK / "no-such.yaml"),
        "directory": str(WORK),
        "tilde-user": "~no-such-user-sbbackup/c.yaml",
        "nul": str(WORK / "a\0b.yaml"),
    }[where]


def load(path: str | None, env: dict[str, str]) -> Settings | ConfigError:
    try:
        return load_settings(path, env=env)
    except ConfigError as exc:
        return exc


@FUZZ
@given(data=contents, where=locations, env=environments, via_env=st.booleans())
@example(data=b"\xff\xfe", where="file", env={}, via_env=False)
@example(data=("[" * 3000 + "]" * 3000).encode(), where="file", env={}, via_env=False)
@example(data=f"backup:\n  path: {HUGE}\n".encode(), where="file", env={}, via_env=False)
@example(data=b"", where="tilde-user", env={}, via_env=True)
def test_load_settings_returns_settings_or_config_error(
    data: bytes, where: str, env: dict[str, str], via_env: bool
) -> None:
    path = config_path(where, data)
    outcome = load(None, {**env, "SBBACKUP_CONFIG": path}) if via_env else load(path, env)
    assert isinstance(outcome, (Settings, ConfigError))
    if isinstance(outcome, ConfigError):
        assert outcome.message and "\n" not in outcome.message


@FUZZ
@given(env=environments)
def test_environment_alone_returns_settings_or_config_error(env: dict[str, str]) -> None:
    env.pop("SBBACKUP_CONFIG", None)
    assert isinstance(load(None, env), (Settings, ConfigError))


@pytest.mark.parametrize("depth", [100, 5000])
def test_deep_yaml_is_a_config_error(depth: int) -> None:
    path = config_path("file", ("[" * depth + "]" * depth).encode())
    outcome = load(path, {})
    assert isinstance(outcome, (Settings, ConfigError))
