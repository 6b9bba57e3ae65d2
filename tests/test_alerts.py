"""The chart's alerts (deploy/helm/qwen3-reranker/files/alerts.yaml): valid for Prometheus
(`promtool check rules`), each firing when it should and silent when not (`promtool test rules`
with tests/fixtures/alerts.test.yaml), a broken threshold caught, and every metric they read one
the server exports. promtool comes with Debian's prometheus package (.ci/run installs it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from server.core.metrics import Metrics

from .conftest import ROOT

RULES = ROOT / "deploy" / "helm" / "qwen3-reranker" / "files" / "alerts.yaml"
RULE_TESTS = ROOT / "tests" / "fixtures" / "alerts.test.yaml"
pytestmark = pytest.mark.skipif(
    shutil.which("promtool") is None and not os.environ.get("CI"), reason="needs promtool (.ci/run installs prometheus)"
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)


def test_rules_are_valid_and_their_unit_tests_pass():
    check = promtool("check", "rules", str(RULES))
    assert check.returncode == 0, check.stdout + check.stderr
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        t["alertname"] for case in yaml.safe_load(RULE_TESTS.read_text())["tests"] for t in case["alert_rule_test"]
    }
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert tested == alerts, alerts - tested


def test_the_rule_tests_catch_a_changed_threshold(tmp_path: Path):
    rules = tmp_path / "deploy" / "helm" / "qwen3-reranker" / "files" / "alerts.yaml"
    rules.parent.mkdir(parents=True)
    rules.write_text(RULES.read_text().replace("> 0.01", "> 0.05"))  # the 5xx ratio's threshold
    (tmp_path / "tests" / "fixtures").mkdir(parents=True)
    shutil.copy(RULE_TESTS, tmp_path / "tests" / "fixtures" / "alerts.test.yaml")
    result = promtool("test", "rules", str(tmp_path / "tests" / "fixtures" / "alerts.test.yaml"))
    assert result.returncode != 0 and "RerankHighErrorRatio" in result.stdout + result.stderr


def test_every_metric_the_alerts_read_is_one_the_server_exports():
    exported = {m.name for m in Metrics().registry.collect()}  # names without _total/_bucket
    exprs = " ".join(r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"])
    used = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in re.findall(r"\brerank_[a-z_]+", exprs)}
    assert used and used <= exported, used - exported
