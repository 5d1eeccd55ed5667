"""Repository lint: no unsafe deserialisation or code execution anywhere in the package."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

RULES = {
    "pickle.load": re.compile(r"\bpickle\.loads?\s*\("),
    "torch.load without weights_only=True": re.compile(r"\btorch\.load\s*\((?![^)]*weights_only\s*=\s*True)"),
    "yaml.load (use safe_load)": re.compile(r"\byaml\.(?:load|unsafe_load|full_load)\s*\("),
    "eval/exec": re.compile(r"(?<![\w.])(?:eval|exec)\s*\("),
    "unverified TLS": re.compile(r"ssl\._create_unverified_context|verify\s*=\s*False"),
    "dill/cloudpickle/joblib.load": re.compile(r"\b(?:dill|cloudpickle|joblib)\.load"),
    "numpy allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
}


def violations(text: str) -> list[str]:
    found = []
    for lineno, line in enumerate(text.splitlines(), 1):
        code = line.split("#", 1)[0]
        for name, pattern in RULES.items():
            if pattern.search(code):
                found.append(f"{lineno}: {name}: {line.strip()}")
    return found


def test_lint_catches_each_bad_pattern() -> None:
    bad = [
        "x = pickle.load(f)",
        "x = pickle.loads(b)",
        "m = torch.load(path)",
        "m = torch.load(path, weights_only=False)",
        "c = yaml.load(text)",
        "eval(s)",
        "exec(code)",
        "ctx = ssl._create_unverified_context()",
        "np.load(p, allow_pickle=True)",
    ]
    for line in bad:
        assert violations(line), line
    good = [
        "m = torch.load(path, map_location='cpu', weights_only=True)",
        "c = yaml.safe_load(t)",
        "model.eval()",
        "x = evaluate(m)",
    ]
    for line in good:
        assert not violations(line), line


def test_package_has_no_unsafe_calls() -> None:
    problems = []
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20
    for path in files:
        for v in violations(path.read_text()):
            problems.append(f"{path.relative_to(SRC)}:{v}")
    assert not problems, "\n".join(problems)
