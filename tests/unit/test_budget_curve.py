"""Budget curves: trials of several runs pooled per eps or per poison budget (``poisonlab trials-curve``)."""

from __future__ import annotations

import json

import pytest

from poisonlab.attacks.poisoning import budget_curve
from poisonlab.attacks.poisoning.config import load_poisoning_config
from poisonlab.attacks.poisoning.trials import summarize_trials
from poisonlab.cli import main
from poisonlab.errors import PoisonlabError

TINY = [
    "--dataset", "digits", "--model", "mlp", "--width", "16", "--epochs", "1", "--poison-count", "4",
    "--restarts", "1", "--steps", "2", "--device", "cpu", "--set", "train.lr=0.05", "--victims", "1",
    "--no-clean", "--quiet",
]  # fmt: skip


def _result(overrides: list[str], rows: list[tuple[int, int, float, float]]) -> dict:
    """A trials result as ``run_trials`` writes it: rows are (seed, poisoned hits, poisoned margin, noise margin)."""
    config = load_poisoning_config(None, overrides).model_dump(mode="json")
    trials = [
        {"seed": seed, "poisoned_successes": hits, "poisoned_n": 2, "poisoned_accuracy": 0.97,
         "poisoned_margin": pm, "control_successes": 0, "control_n": 2, "control_accuracy": 0.975,
         "control_margin": cm, "craft_loss": 0.1}
        for seed, hits, pm, cm in rows
    ]  # fmt: skip
    return {"config": config, "victim_overrides": [], "trials": trials}


def test_runs_pool_by_config_per_eps_and_a_seed_counts_once() -> None:
    a = _result(["poison.eps=128/255"], [(0, 1, 0.5, -3.0), (1, 0, -4.0, -6.0)])
    b = _result(["poison.eps=128/255", "seed=1"], [(1, 2, 9.0, 9.0), (2, 0, -2.0, -5.0)])  # seed 1 again
    c = _result(["poison.eps=64/255", "seed=5"], [(5, 0, -7.0, -8.0)])
    other = _result(["poison.eps=128/255", "poison.recipe=feature-collision"], [(0, 0, -9.0, -9.5)])
    del c["config"]["poison"]["retrain_every"]  # recorded before the field existed: its default pools with it
    curves = budget_curve.budget_curves([a, b, c, other])
    assert [c["label"] for c in curves] == [
        "gradient-matching (from-scratch), budget 1%",
        "feature-collision (from-scratch), budget 1%",
    ]
    gm = curves[0]
    assert [p["x"] for p in gm["points"]] == [64, 128] and gm["over"] == "eps"
    assert [p["seeds"] for p in gm["points"]] == [[5], [0, 1, 2]]
    pooled = gm["points"][1]["summary"]
    assert pooled == summarize_trials([a["trials"][0], a["trials"][1], b["trials"][1]])  # b's seed 1 dropped
    assert pooled["poisoned"]["success"]["successes"] == 1 and pooled["poisoned"]["success"]["n"] == 6
    assert pooled["margin_shift_vs_control"]["mean"] == pytest.approx((3.5 + 2.0 + 3.0) / 3)
    rows = budget_curve.curve_rows(curves)
    label = "gradient-matching (from-scratch), budget 1%"
    assert rows[1][:5] == [label, "128/255", "3 x 2", "17% [3, 56] (1/6)", "1/3"]
    shift = pooled["margin_shift_vs_control"]
    assert rows[1][7] == f"{shift['mean']:.1f} [{shift['lo']:.1f}, {shift['hi']:.1f}]"
    assert budget_curve.markdown(curves).count("\n") == 2 + len(rows) - 1
    header, per_trial = budget_curve.per_trial_rows(gm)
    assert header[2:] == ["64/255: hits, shift", "128/255: hits, shift"]
    assert per_trial[0] == ["0", "? -> ?", ".", "1/2, +3.5"] and per_trial[-1] == ["5", "? -> ?", "0/2, +1.0", "."]
    assert [r[0] for r in per_trial] == ["0", "1", "2", "5"] and per_trial[1][3] == "0/2, +2.0"  # seed 1 from a


def test_other_settings_are_other_curves_with_labels_told_apart() -> None:
    one = _result(["poison.eps=128/255", "poison.restarts=1"], [(0, 0, -1.0, -2.0)])
    eight = _result(["poison.eps=128/255", "poison.restarts=8"], [(0, 1, 1.0, -2.0)])
    curves = budget_curve.budget_curves([one, eight])
    assert len(curves) == 2 and curves[0]["label"] != curves[1]["label"]
    assert all(c["label"].startswith("gradient-matching (from-scratch), budget 1% [") for c in curves)
    no_control = _result(["poison.eps=128/255"], [(0, 0, -1.0, -2.0)])
    for r in no_control["trials"]:
        for k in [k for k in r if k.startswith("control_")]:
            del r[k]
    (curve,) = budget_curve.budget_curves([no_control])
    assert budget_curve.curve_rows([curve])[0][5:] == ["-", "-", "-"]
    with_control = _result(["poison.eps=128/255"], [(1, 0, -1.0, -2.0)])
    assert len(budget_curve.budget_curves([no_control, with_control])) == 2  # other arms: not pooled (no crash)


def test_budget_axis_pools_per_budget_and_keeps_eps_and_count_runs_apart() -> None:
    one = _result(["poison.eps=128/255"], [(0, 0, -4.0, -6.0), (1, 0, -5.0, -6.0)])
    two = _result(["poison.eps=128/255", "poison.budget=0.02"], [(0, 1, 1.0, -6.0), (1, 0, -2.0, -6.0)])
    two_more = _result(["poison.eps=128/255", "poison.budget=0.02", "seed=1"], [(1, 2, 9.0, 9.0), (2, 0, -1.0, -3.0)])
    other_eps = _result(["poison.eps=96/255", "poison.budget=0.02"], [(0, 0, -3.0, -5.0)])
    counted = _result(["poison.eps=128/255", "poison.poison_count=80"], [(0, 1, 2.0, -6.0)])
    curves = budget_curve.budget_curves([one, two, two_more, other_eps, counted], over="budget")
    assert len(curves) == 3 and all(c["over"] == "budget" for c in curves)
    gm = curves[0]
    assert gm["label"].startswith("gradient-matching (from-scratch), eps 128/255")
    assert [(p["x"], p["x_text"], p["seeds"]) for p in gm["points"]] == [(1, "1%", [0, 1]), (2, "2%", [0, 1, 2])]
    assert gm["points"][1]["summary"] == summarize_trials([two["trials"][0], two["trials"][1], two_more["trials"][1]])
    assert "eps 96/255" in curves[1]["label"] and [p["x"] for p in curves[1]["points"]] == [2]
    assert [p["x_text"] for p in curves[2]["points"]] == ["80 poisons"]  # a fixed count is not a fraction
    assert budget_curve.per_trial_rows(gm)[0][2:] == ["1%: hits, shift", "2%: hits, shift"]
    # the same runs over eps: every budget is a curve of its own
    assert len(budget_curve.budget_curves([one, two, two_more, other_eps], over="eps")) == 2
    with pytest.raises(ValueError, match="expected one of eps, budget"):
        budget_curve.budget_curves([one], over="steps")


def test_trials_curve_end_to_end_pools_two_runs_and_same_seed_is_bit_identical(tmp_path, capsys) -> None:
    a, b, c, out = (tmp_path / n for n in ("a", "b", "c", "curve"))
    assert main(["trials", *TINY, "--eps", "16/255", "--trials", "2", "--workdir", str(a)]) == 0
    assert main(["trials", *TINY, "--eps", "16/255", "--trials", "2", "--set", "seed=1", "--workdir", str(b)]) == 0
    assert main(["trials", *TINY, "--eps", "32/255", "--trials", "1", "--workdir", str(c)]) == 0
    capsys.readouterr()
    assert main(["trials-curve", str(a), str(b), str(c / "report" / "result.json"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 curve(s) from 3 run(s)" in printed and "| 16/255 | 3 x 1 |" in printed and "| 32/255 | 1 x 1 |" in printed
    (curve,) = json.loads((out / "curve.json").read_text())
    assert [p["seeds"] for p in curve["points"]] == [[0, 1, 2], [0]]
    row_a = json.loads((a / "report" / "result.json").read_text())["trials"][1]
    row_b = json.loads((b / "report" / "result.json").read_text())["trials"][0]
    assert row_a["seed"] == row_b["seed"] == 1
    same = {k: v for k, v in row_a.items() if k not in ("trial", "wall_seconds")}
    assert same == {k: v for k, v in row_b.items() if k not in ("trial", "wall_seconds")}  # same seed, same trial
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Per point" in (out / "index.html").read_text()
    assert main(["trials-curve", str(a), str(c), "--over", "budget", "--out", str(tmp_path / "by-budget")]) == 0
    printed = capsys.readouterr().out
    assert "2 curve(s) from 2 run(s)" in printed and "eps 16/255 | 4 poisons | 2 x 1 |" in printed


def test_trials_curve_bad_input_is_one_line_naming_the_file(tmp_path, capsys) -> None:
    out = tmp_path / "curve"
    assert main(["trials-curve", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "missing: no such file or trials workdir" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["trials-curve", str(tmp_path / "empty"), "--out", str(out)]) == 2
    assert "empty: no report*/result.json" in capsys.readouterr().err
    corrupt = tmp_path / "w" / "report" / "result.json"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_text("{not json")
    assert main(["trials-curve", str(tmp_path / "w"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(corrupt) in err and "unreadable" in err and err.count("\n") == 1
    corrupt.write_text(json.dumps({"config": {"poison": {"eps": 0.1}}, "trials": [{"seed": 0}]}))
    assert main(["trials-curve", str(corrupt), "--out", str(out)]) == 2
    assert "not a trials result" in capsys.readouterr().err
    corrupt.write_text(json.dumps({"config": {"poison": {"eps": 2.0}}, "trials": []}))
    with pytest.raises(PoisonlabError, match="expected a radius"):
        budget_curve.load_results([corrupt])
    assert not out.exists()  # nothing half-written
