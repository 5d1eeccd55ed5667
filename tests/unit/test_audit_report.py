"""The audit report's trade-off chart plots success rates only, each against its defense's clean accuracy."""

from __future__ import annotations

from poisonlab.experiments.audit.report import tradeoff_png, tradeoff_points


def _entry(metric: str, values: dict[str, float], rate: bool = True) -> dict:
    return {
        "headline": {"metric": metric, "label": metric, "rate": rate},
        "defenses": {d: {"summary": {metric: {"mean": v, "lo": v, "hi": v}}} for d, v in values.items()},
    }


def test_tradeoff_points_pair_each_defense_with_its_clean_accuracy_and_skip_non_rates() -> None:
    result = {
        "probes": {
            "clean": _entry("clean_accuracy", {"none": 0.98, "mixup": 0.97}),
            "backdoor": _entry("backdoor_rate", {"none": 0.99, "mixup": 0.6, "dp-sgd": 0.3}),
            "inversion": _entry("psnr", {"none": 24.0}, rate=False),
        }
    }
    points = tradeoff_points(result)
    assert set(points) == {"backdoor"}  # PSNR in dB does not belong on a [0, 1] axis; clean is the x axis
    # dp-sgd has no clean-accuracy row, so it has no x coordinate and is left out rather than guessed
    assert points["backdoor"] == [("none", 0.98, 0.99), ("mixup", 0.97, 0.6)]
    png = tradeoff_png(result)
    assert png is not None and png.startswith(b"\x89PNG")


def test_tradeoff_chart_is_absent_without_rates() -> None:
    result = {
        "probes": {
            "clean": _entry("clean_accuracy", {"none": 0.98}),
            "inversion": _entry("psnr", {"none": 9.0}, rate=False),
        }
    }
    assert tradeoff_points(result) == {}
    assert tradeoff_png(result) is None


def test_probe_figures_take_the_first_existing_picture_with_the_probes_caption(tmp_path) -> None:
    from poisonlab.experiments.audit.probes import PROBES, load_probes

    load_probes()
    png = tmp_path / "a.png"
    png.write_bytes(b"PNG")
    missing = {"key": "m", "meta": {"roc_png": str(tmp_path / "gone.png")}}
    found = {"key": "k", "meta": {"roc_png": str(png)}}
    entry = {"defenses": {"none": {"rows": [missing]}, "mixup": {"rows": [found]}}}
    assert PROBES.get("membership").figures(entry, tmp_path) == [("ROC curves (log-log) of trial k", b"PNG")]
    assert PROBES.get("membership").figures({"defenses": {"none": {"rows": [missing]}}}, tmp_path) == []
    assert PROBES.get("clean").figures(entry, tmp_path) == []  # no picture key: no figure
