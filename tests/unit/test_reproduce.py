"""The reproduction registry: known papers, claims resolved from result JSON, verdicts, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from poisonlab.cli import main
from poisonlab.experiments.reproduce import REPRODUCTIONS, dig, load_reproductions, markdown_table, run_reproduction


def test_dig() -> None:
    data = {"a": {"b": [1, {"c": 2.5}]}}
    assert dig(data, "a.b.1.c") == 2.5
    with pytest.raises(KeyError):
        dig(data, "a.x")
    fprs = {"tpr": {"0.001": 0.01, "0.01": 0.03, "0": {"01": -1.0}}}
    assert dig(fprs, "tpr.0.01") == 0.03  # a key with a dot; the longest matching key wins over "0" -> "01"
    assert dig(fprs, "tpr.0.001") == 0.01
    assert dig(fprs, "tpr.0") == {"01": -1.0}


def test_truth_serum_verdict_reads_a_real_result_layout(tmp_path: Path) -> None:
    load_reproductions()
    amp = {"auc": {"difference": 0.448}, "0.01": {"ratio": 22.4, "lo": 10.6}}
    result = {
        "metrics": {"clean": {"all": {
            "lira-online-fixed": {"tpr_at_fpr": {"0.001": 0.0107}},
            "global": {"tpr_at_fpr": {"0.001": 0.000825}},
        }}},
        "summary": {"amplification": {"lira-online-fixed": amp}},
    }  # fmt: skip
    (tmp_path / "truth-serum").mkdir()
    (tmp_path / "truth-serum" / "results.json").write_text(json.dumps(result))
    row = run_reproduction("truth-serum", tmp_path, run=False)
    assert row["reproduced"] is True, row
    amp["0.01"]["lo"] = 0.9  # not significant: the interval includes 1
    (tmp_path / "truth-serum" / "results.json").write_text(json.dumps(result))
    assert run_reproduction("truth-serum", tmp_path, run=False)["reproduced"] is False


def test_every_reproduction_is_complete() -> None:
    load_reproductions()
    assert {"badnets", "blind-backdoors", "witches-brew", "fl-backdoor", "dp-disparate-impact"} <= set(REPRODUCTIONS)
    for r in REPRODUCTIONS.values():
        assert r.argv[0] and "{workdir}" in r.argv and r.metrics and r.claim and r.scale


def test_report_only_reads_the_result_and_judges(tmp_path: Path) -> None:
    folder = tmp_path / "badnets" / "report"
    folder.mkdir(parents=True)
    result = {"summary": {"backdoor_pooled": {"rate": 0.97}, "accuracy_drop": {"mean": 0.004}}}
    (folder / "result.json").write_text(json.dumps(result))
    res = run_reproduction("badnets", tmp_path, run=False)
    assert res["measured"] == {"asr": 0.97, "drop": 0.004} and res["reproduced"]
    result["summary"]["backdoor_pooled"]["rate"] = 0.5
    (folder / "result.json").write_text(json.dumps(result))
    res = run_reproduction("badnets", tmp_path, run=False)
    assert not res["reproduced"] and "ASR 0.5 < 0.9" in res["why"]
    assert "| no |" in markdown_table([res])


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "no-such-paper", "--workdir", str(tmp_path)]) == 2
    assert "unknown paper" in capsys.readouterr().err
    assert main(["reproduce", "badnets", "--report-only", "--workdir", str(tmp_path)]) == 2
    assert main(["reproduce", "--list"]) == 0
