"""`latentqa bench-serve --quick`: a real server, real load, every reply checked, figures that can be read."""
import json

import pytest

from latentqa.cli import main


@pytest.mark.slow
def test_bench_serve_quick_answers_every_request_with_its_own_answer(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench-serve", "--quick", "--concurrency", "1", "4", "--requests", "6", "--max-new-tokens", "4",
                 "--out-dir", str(out)]) == 0
    results = json.loads((out / "bench-serve.json").read_text())
    assert list(results["phases"]) == ["cache off, c=1", "cache off, c=4", "cache cold, c=4", "cache warm, c=4",
                                       "cache warm, c=1", "cache warm, reordered, c=4"]
    for phase in results["phases"].values():
        assert phase["answered"] == phase["requests"] and phase["lost"] == phase["wrong"] == 0
        assert phase["throughput_rps"] > 0 and phase["p95_ms"] >= phase["p50_ms"] > 0
    assert results["phases"]["cache off, c=1"]["mean_batch_size"] == 1
    assert set(results["ratios"]) == {"c=4 / c=1, cache off", "warm / cold cache, c=4", "c=4 / c=1, warm cache"}
    phases = results["phases"]
    assert phases["cache cold, c=4"]["cache_misses"] > 0
    assert phases["cache warm, c=4"]["cache_misses"] == phases["cache warm, c=1"]["cache_misses"] == 0
    # greedy windows hold several paragraphs: in another order most of them are new windows
    assert results["window_packing"] == "greedy" and phases["cache warm, reordered, c=4"]["cache_misses"] > 0
    assert (out / "bench-serve.png").stat().st_size > 0
    assert "warm / cold cache, c=4" in capsys.readouterr().out
