"""`latentqa compare` over evaluations that read different numbers of latents: a table with the count, and a plot
of quality against it, one line per reader."""
import json

from latentqa.cli import main
from latentqa.evaluation.report import _reader_name


def _evaluation(folder, model, latents, f1):
    folder.mkdir(parents=True)
    metrics = {"reader": "latent", "model": model, "latents": latents, "em": f1 / 2, "f1": f1, "sp_em": 0.1,
               "sp_f1": 0.6, "joint_em": 0.0, "joint_f1": 0.1, "count": 200}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return str(folder)


def test_compare_plots_quality_against_the_latents_each_reader_read(tmp_path, capsys):
    folders = [_evaluation(tmp_path / f"nested-k{k}", "runs/nested/best", k, 0.2 + k / 1000) for k in (4, 8, 16, 32)]
    folders.append(_evaluation(tmp_path / "fixed-k8", "runs/k8/best", 8, 0.24))
    out = tmp_path / "cmp.png"
    assert main(["compare", *folders, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "latents" in printed.splitlines()[0] and "nested-k16" in printed
    by_latents = tmp_path / "cmp-by-latents.png"
    assert f"plot: {by_latents}" in printed
    assert by_latents.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and by_latents.stat().st_size > 10_000


def test_no_plot_against_latents_where_fewer_than_two_say_how_many(tmp_path, capsys):
    older = _evaluation(tmp_path / "old", "runs/old/best", None, 0.2)  # written before evaluations recorded it
    other = _evaluation(tmp_path / "one", "runs/one/best", 32, 0.2)
    assert main(["compare", older, other, "--out", str(tmp_path / "cmp.png")]) == 0
    assert "by-latents" not in capsys.readouterr().out and not (tmp_path / "cmp-by-latents.png").exists()


def test_a_reader_is_named_by_its_run_folder():
    assert _reader_name("runs/nested-seed1/best") == "nested-seed1"
    assert _reader_name("runs/k8/last") == "k8"
    assert _reader_name("models/my-reader") == "my-reader"
