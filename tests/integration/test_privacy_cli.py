"""'poisonlab attribute-inference' and 'poisonlab canary': dry runs end to end, resume from the store, bad input."""

from __future__ import annotations

import json

from poisonlab.cli import main


def test_attribute_inference_dryrun_writes_results_and_resumes(tmp_path, capsys) -> None:
    args = ["attribute-inference", "--dryrun", "--quiet", "--workdir", str(tmp_path)]
    assert main(args) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    s = result["summary"]
    assert s["trials"] == 1 and s["poisoned"]["poisons"] == 4 * 4 * 4 and s["clean"]["poisons"] == 0
    for arm in ("clean", "poisoned"):
        for attack in ("confidence", "calibrated"):
            acc = s[arm][attack]["accuracy"]
            assert acc["n"] == 4 and 0 <= acc["lo"] <= acc["rate"] <= acc["hi"] <= 1
    assert (tmp_path / "report" / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert "Attribute inference" in (tmp_path / "report" / "index.html").read_text()
    assert "majority-value guess" in capsys.readouterr().out
    assert main(args) == 0  # a rerun reads the finished trial from the store
    assert json.loads((tmp_path / "results.json").read_text())["trials"] == result["trials"]


def test_canary_dryrun_writes_results(tmp_path, capsys) -> None:
    assert main(["canary", "--dryrun", "--quiet", "--workdir", str(tmp_path)]) == 0
    s = json.loads((tmp_path / "results.json").read_text())["summary"]
    assert abs(s["max_exposure"] - 9.965784284662087) < 1e-9  # log2(10**3)
    for arm in ("clean", "poisoned"):
        e = s[arm]["likelihood"]["exposure"]["mean"]
        assert 0 <= e <= s["max_exposure"]
    assert (tmp_path / "report" / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert "max exposure" in capsys.readouterr().out


def test_bad_input_exits_2(tmp_path, capsys) -> None:
    assert main(["attribute-inference", "--attribute", "height", "--workdir", str(tmp_path)]) == 2
    assert "attack.attribute" in capsys.readouterr().err
    assert main(["canary", "--prefix", "\u20ac", "--workdir", str(tmp_path)]) == 2
    assert "canary.prefix" in capsys.readouterr().err
    assert main(["canary", "--continuation", "zeros", "--workdir", str(tmp_path)]) == 2
    assert "canary.poison_continuation" in capsys.readouterr().err
