"""Settings (server/core/settings.py) and the CLI that maps flags onto them (server/cli.py), engine-free."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from server.cli import settings_from_args
from server.core.settings import Settings


def test_flags_win_over_environment_variables_which_win_over_defaults(monkeypatch):
    monkeypatch.setenv("RERANK_PORT", "9001")
    monkeypatch.setenv("RERANK_MAX_DOCUMENTS", "50")
    settings = settings_from_args(["--port", "9002"])
    assert settings.port == 9002  # the flag
    assert settings.max_documents == 50  # the environment
    assert settings.request_timeout == Settings.model_fields["request_timeout"].default  # the default


def test_api_keys_from_a_list_a_comma_string_and_both_variables(monkeypatch):
    assert Settings(api_key=" a, b ,,c").api_keys() == ["a", "b", "c"]
    monkeypatch.setenv("RERANK_API_KEY", "k1,k2")
    monkeypatch.setenv("RERANK_API_KEYS", "k3")
    assert Settings.from_env().api_keys() == ["k1", "k2", "k3"]
    assert "k1" not in repr(Settings.from_env())  # secrets stay out of the settings' log line


def test_invalid_values_are_refused_at_start_up():
    with pytest.raises(ValidationError, match="max_pairs_in_flight"):
        Settings(max_documents=100, max_pairs_in_flight=10)
    with pytest.raises(ValidationError, match="redis://"):
        Settings(score_cache_url="http://example.invalid")
    with pytest.raises(ValidationError):
        Settings(port=70000)
    with pytest.raises(SystemExit):  # argparse: a choice that does not exist
        settings_from_args(["--dtype", "float64"])


def test_empty_values_mean_none():
    settings = Settings(log_file="", score_cache_url="")
    assert settings.log_file is None and settings.score_cache_url is None
    assert Settings(model="m").served_model_name == ["m"] and Settings(
        model="m", served_model_name="n"
    ).served_model_name == ["n"]


def test_an_empty_variable_keeps_the_default(monkeypatch):
    """`RERANK_DTYPE=` in compose's .env (an emptied line) is an unset variable, not an invalid value."""
    for name in ("DTYPE", "MAX_NUM_SEQS", "GPU_MEMORY_UTILIZATION", "ENFORCE_EAGER", "MAX_DOCUMENTS"):
        monkeypatch.setenv(f"RERANK_{name}", "")
    settings = Settings.from_env()
    assert settings.dtype == "auto" and settings.max_num_seqs is None and settings.gpu_memory_utilization == []
    assert settings.enforce_eager is False and settings.max_documents == Settings.model_fields["max_documents"].default


def test_every_flag_in_the_readme_table_is_a_flag_of_the_server():
    from server.cli import build_parser

    from .conftest import ROOT

    section = (ROOT / "README.md").read_text().split("## Configuration\n", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"^\| `(--[a-z-]+)`", section, re.M)
    flags = {option for action in build_parser()._actions for option in action.option_strings}
    assert len(named) >= 8 and set(named) <= flags, set(named) - flags
