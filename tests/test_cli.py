import json

import pytest

from latentqa.cli import build_parser, main


def _subcommands(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield [name], sub
                for path, subsub in _subcommands(sub):
                    yield [name, *path], subsub


def test_every_subcommand_explains_itself(capsys):
    commands = list(_subcommands(build_parser()))
    assert ["data", "stats"] in [c for c, _ in commands]
    for command, _ in commands:
        with pytest.raises(SystemExit) as info:
            main([*command, "--help"])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: latentqa " + " ".join(command)) and len(out) > 100


def test_data_stats_json(sample_path, capsys, tmp_path):
    assert main(["data", "stats", "--data", str(sample_path), "--json", "--cache-dir", str(tmp_path)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["examples"] == 53 and set(stats["lose_support_if_cut_at"]) == {"512", "1024"}


@pytest.mark.parametrize("argv, message", [
    (["demo", "--quick", "--full"], "--quick and --full: choose one"),
    (["demo", "--facts", "9"], "--facts must be between 1 and 8, got 9"),
    (["demo", "--modes", "latents", "both"], "--modes must be among none, latents, encoder, got both"),
    (["demo", "--nested", "4", "0"], "--nested counts of latents must be at least 1, got [4, 0]"),
    (["demo", "--nested", "4", "--facts", "4", "--modes", "none"],
     "--modes: not with --nested (it trains one kind of latent reader and no baseline)"),
    (["bench", "--lengths", "512", "0"], "--lengths must be at least 1 each, got [512, 0]"),
    (["bench", "--repeats", "0"], "--repeats must be at least 1, got 0"),
])
def test_demo_and_bench_settings_are_refused_in_one_line_naming_the_flag(argv, message, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"latentqa: error: {message}"
