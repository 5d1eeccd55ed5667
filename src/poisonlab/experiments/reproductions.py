"""The seed papers' small-scale reproductions (see :mod:`poisonlab.experiments.reproduce`).

Claims are ALGORITHMS.md's headline numbers ([paper~] = approximate). The bars test the *direction and
rough size* of each effect at our scale (mnist5k, small ConvNets, 2 CPU cores), never the paper's absolute
numbers on CIFAR-10/ImageNet.
"""

from __future__ import annotations

from poisonlab.experiments.reproduce import Reproduction, _all, _at_least, _at_most, _ratio_at_least, register

_SUMMARY = "report/result.json"

register(
    Reproduction(
        name="badnets",
        paper="BadNets (Gu et al. 2017)",
        claim="a patch trigger on a few % of relabelled training images gives ~99% ASR with no clean-accuracy loss",
        scale="mnist5k, ConvNet width 16, 6 epochs, 5% poisons, 3 victim seeds + paired clean controls",
        argv=(
            "backdoor",
            "--config",
            "recipes/backdoor-patch.yaml",
            "--victims",
            "3",
            "--quiet",
            "--workdir",
            "{workdir}",
        ),
        result=_SUMMARY,
        metrics={"asr": "summary.backdoor_pooled.rate", "drop": "summary.accuracy_drop.mean"},
        verdict=_all(_at_least("asr", 0.9, "ASR"), _at_most("drop", 0.02, "accuracy drop")),
    )
)

register(
    Reproduction(
        name="blind-backdoors",
        paper="Blind Backdoors in Deep Learning Models (Bagdasaryan & Shmatikov 2021)",
        claim="a loss-computation compromise with MGDA balancing reaches ~100% backdoor accuracy, main task within ~1 pt",
        scale="mnist5k, ConvNet width 16, single-pixel trigger, 3 victim seeds + paired clean controls",
        argv=(
            "backdoor",
            "--config",
            "recipes/backdoor-blind-pixel.yaml",
            "--victims",
            "3",
            "--quiet",
            "--workdir",
            "{workdir}",
        ),  # fmt: skip
        result=_SUMMARY,
        metrics={"asr": "summary.backdoor_pooled.rate", "drop": "summary.accuracy_drop.mean"},
        verdict=_all(_at_least("asr", 0.9, "backdoor accuracy"), _at_most("drop", 0.02, "accuracy drop")),
    )
)

_TRIALS = ("trials", "--config", "recipes/mnist5k-convnet.yaml", "--eps", "128/255", "--quiet")

register(
    Reproduction(
        name="witches-brew",
        paper="Witches' Brew (Geiping et al., ICLR 2021)",
        claim="gradient matching from scratch poisons a target with ~90% success at 16/255 and 1% budget (CIFAR-10); "
        "a reference implementation reached ~40% on MNIST at 128/255",
        scale="mnist5k, ConvNet width 16, from scratch, 1% budget, 128/255, 2 restarts x 250 steps, 3 trials x 1 victim",
        argv=(
            *_TRIALS,
            "--recipe",
            "gradient-matching",
            "--restarts",
            "2",
            "--no-augment",
            "--trials",
            "3",
            "--victims",
            "1",
            "--workdir",
            "{workdir}",
        ),  # fmt: skip
        result=_SUMMARY,
        metrics={"success": "summary.poisoned.success.rate", "control": "summary.control.success.rate"},
        verdict=_all(_at_least("success", 0.5, "success"), _at_most("control", 0.0, "noise control")),
        notes="MNIST from scratch is far harder than CIFAR-10; see benchmarks/RESULTS.md",
    )
)

register(
    Reproduction(
        name="poison-frogs",
        paper="Poison Frogs (Shafahi et al., NeurIPS 2018)",
        claim="feature-collision poisons make a transfer-learned victim misclassify the target (~100% one-shot "
        "kill on a frozen feature extractor)",
        scale="mnist5k, ConvNet width 16, transfer (frozen pretrained extractor), 1% budget, 128/255, 3 trials x 2 victims",
        argv=(
            *_TRIALS,
            "--recipe",
            "feature-collision",
            "--scenario",
            "transfer",
            "--restarts",
            "1",
            "--no-augment",
            "--trials",
            "3",
            "--victims",
            "2",
            "--workdir",
            "{workdir}",
        ),  # fmt: skip
        result=_SUMMARY,
        metrics={"success": "summary.poisoned.success.rate", "control": "summary.control.success.rate"},
        verdict=_all(_at_least("success", 0.5, "success"), _at_most("control", 0.0, "noise control")),
    )
)

register(
    Reproduction(
        name="metapoison",
        paper="MetaPoison (Huang et al., NeurIPS 2020)",
        claim="unrolled meta-learned poisons reach ~100% success at 1% budget, 8/255 on CIFAR-10 [paper~]",
        scale="mnist5k, ConvNet width 16, from scratch, 1% budget, 128/255, 2 trials x 1 victim",
        argv=(
            *_TRIALS,
            "--recipe",
            "metapoison",
            "--restarts",
            "1",
            "--steps",
            "60",
            "--no-augment",
            "--trials",
            "2",
            "--victims",
            "1",
            "--workdir",
            "{workdir}",
        ),  # fmt: skip
        result=_SUMMARY,
        metrics={"success": "summary.poisoned.success.rate", "control": "summary.control.success.rate"},
        verdict=_all(_at_least("success", 0.5, "success"), _at_most("control", 0.0, "noise control")),
    )
)

register(
    Reproduction(
        name="fl-backdoor",
        paper="How To Backdoor Federated Learning (Bagdasaryan et al., AISTATS 2020)",
        claim="one attacker in one round replaces the global model (scaled update): ~100% backdoor accuracy right after the round, main task barely changed",
        scale="mnist5k, LeNet, 100 clients (Dirichlet 0.9), 10 per round, 200 pretraining rounds, attack in round 5 of 30",
        argv=(
            "fl",
            "--dataset",
            "mnist5k",
            "--clients",
            "100",
            "--per-round",
            "10",
            "--rounds",
            "30",
            "--attack-round",
            "5",
            "--attack",
            "model-replacement",
            "--aggregator",
            "fedavg",
            "--workdir",
            "{workdir}",
        ),  # fmt: skip
        result="report/result.json",
        metrics={
            "backdoor_after": "summary.backdoor_after.rate",
            "main_drop": "summary.main_drop",
        },
        verdict=_all(
            _at_least("backdoor_after", 0.9, "backdoor accuracy after the round"),
            _at_most("main_drop", 0.02, "main-task drop"),
        ),
    )
)

register(
    Reproduction(
        name="dp-disparate-impact",
        paper="Differential Privacy Has Disparate Impact on Model Accuracy (Bagdasaryan et al., NeurIPS 2019)",
        claim="DP-SGD costs the under-represented class far more accuracy than the others (the DP gap exceeds the non-DP gap)",
        scale="mnist5k, LeNet, class 8 kept at 10%, noise 0.8, clip 1, 30 epochs, 3 seeds, paired arms",
        argv=(
            "disparate-impact",
            "--dataset",
            "mnist5k",
            "--model",
            "lenet",
            "--underrepresented-class",
            "8",
            "--keep-fraction",
            "0.1",
            "--noise",
            "0.8",
            "--seeds",
            "3",
            "--quiet",
            "--workdir",
            "{workdir}",
        ),  # fmt: skip
        result="disparate_impact.json",
        metrics={"gap_increase": "summary.drop.gap_increase.mean", "gap_increase_lo": "summary.drop.gap_increase.lo"},
        verdict=_at_least("gap_increase_lo", 0.0, "gap increase (DP minus non-DP), lower 95% bound"),
    )
)

register(
    Reproduction(
        name="inverting-gradients",
        paper="Inverting Gradients (Geiping et al., NeurIPS 2020)",
        claim="a single image is recovered from its gradient with an untrained network (cosine loss + TV, signed Adam); quality falls with batch size",
        scale="mnist5k, untrained ConvNet width 32, one image, 2000 iterations, labels recovered from the update",
        argv=(
            "invert",
            "--dataset",
            "mnist5k",
            "--model",
            "convnet",
            "--width",
            "32",
            "--batch-size",
            "1",
            "--trials",
            "1",
            "--iterations",
            "2000",
            "--quiet",
            "--workdir",
            "{workdir}",
        ),  # fmt: skip
        result="results.json",
        metrics={"psnr": "metrics.psnr_mean", "ssim": "metrics.ssim_mean"},
        verdict=_at_least("psnr", 25.0, "PSNR (dB)"),
    )
)

_LIRA = "metrics.clean.all.lira-online-fixed.tpr_at_fpr.0.001"
_AMP = "summary.amplification.lira-online-fixed"

register(
    Reproduction(
        name="truth-serum",
        paper="Truth Serum: Poisoning Machine Learning Models to Reveal Their Secrets (Tramer et al., CCS 2022), with LiRA (Carlini et al., S&P 2022)",
        claim="mislabelled replicas of a target raise its membership TPR at low FPR ~10x; LiRA beats the loss threshold at low FPR",
        scale="mnist5k (5,000-point universe), ConvNet width 8, 20 epochs, 16+16 models on random halves, 250 targets x 8 replicas",
        argv=(
            "mia",
            "--config",
            "recipes/mia-mnist5k.yaml",
            "--poison-targets",
            "250",
            "--replicas",
            "8",
            "--quiet",
            "--workdir",
            "{workdir}",
        ),  # fmt: skip
        result="results.json",
        metrics={
            "lira_tpr_0.1pct": _LIRA,
            "threshold_tpr_0.1pct": "metrics.clean.all.global.tpr_at_fpr.0.001",
            "factor_1pct": f"{_AMP}.0.01.ratio",
            "factor_1pct_lo": f"{_AMP}.0.01.lo",
            "auc_gain": f"{_AMP}.auc.difference",
        },
        verdict=_all(
            _at_least("lira_tpr_0.1pct", 0.005, "LiRA TPR at 0.1% FPR"),
            _ratio_at_least("lira_tpr_0.1pct", "threshold_tpr_0.1pct", 5.0, "LiRA over the threshold"),
            _at_least("factor_1pct_lo", 1.0, "Truth Serum factor at 1% FPR, lower 95% bound"),
            _at_least("factor_1pct", 3.0, "Truth Serum factor at 1% FPR"),
            _at_least("auc_gain", 0.1, "targets' AUC gain"),
        ),
    )
)
