import dataclasses
from pathlib import Path

import pytest

from latentqa.config import ConfigError
from latentqa.training.config import SECTIONS, RunConfig, field_help, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_presets_load_override_and_round_trip(tmp_path):
    for preset in sorted((ROOT / "configs").glob("*.yaml")):
        assert preset.read_text().startswith(f"# latentqa train --config configs/{preset.name}")
        load_config(preset)
    real = load_config(ROOT / "configs" / "latent-hotpotqa.yaml", ["train.lr_latent=3e-4", "latent.num_latents=16"])
    assert real.train.lr_latent == 3e-4 and real.latent.num_latents == 16 and real.reader is real.latent
    assert (real.train.batch_size, real.train.epochs, real.train.lr_t5, real.train.lr_encoder) == (8, 3, 1e-5, 1e-5)
    baseline = load_config(ROOT / "configs" / "baseline-hotpotqa.yaml")
    assert baseline.train.lr_t5 == 1e-4 and baseline.reader == baseline.baseline
    real.save(tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == real


def test_every_field_has_exactly_one_definition():
    """Walk the run config's sections (the readers' own configs among them): each field is declared once, with
    a help text, and `--help` lists each once; no section repeats another's field."""
    owners: dict[str, list[str]] = {}
    for section, cls in SECTIONS.items():
        for spec in dataclasses.fields(cls):
            assert spec.metadata.get("help"), f"{section}.{spec.name} has no help text"
            owners.setdefault(spec.name, []).append(section)
    shared = {name: sections for name, sections in owners.items() if len(sections) > 1}
    # `batch_size` is two settings (training micro-batch, evaluation batch), each declared once
    assert shared == {"batch_size": ["train", "eval"]}
    lines = field_help().splitlines()
    assert len(lines) == sum(map(len, owners.values())) and len(set(lines)) == len(lines)
    assert {f.name for f in dataclasses.fields(RunConfig)} == set(SECTIONS)


def test_options_outside_the_run_config_have_help_and_the_flags_come_from_them():
    """The server's limits and batching, the index's retrieval settings, the tiny models' sizes and the demo's and
    the bench's settings are option dataclasses too: a help text per field, and `serve`, `bench-serve`, `demo` and
    `bench` have a flag per field, with the field's default."""
    from latentqa.assets import TinySizes
    from latentqa.benchmark.options import BenchOptions
    from latentqa.cli import build_parser
    from latentqa.demo.options import DemoOptions
    from latentqa.index.retrieval import RetrievalConfig
    from latentqa.serving.batching import Batching
    from latentqa.serving.queries import Limits

    for cls in (Limits, Batching, RetrievalConfig, TinySizes, DemoOptions, BenchOptions):
        assert all(spec.metadata.get("help") for spec in dataclasses.fields(cls)), cls.__name__
    commands = build_parser()._subparsers._group_actions[0].choices
    for command, classes in (("serve", (Limits, Batching)), ("bench-serve", (Batching,)), ("demo", (DemoOptions,)),
                             ("bench", (BenchOptions,))):
        flags = {a.dest: a.default for a in commands[command]._actions}
        for cls in classes:
            assert {f.name: f.default for f in dataclasses.fields(cls)}.items() <= flags.items(), (command, cls)


@pytest.mark.parametrize("overrides, message", [
    (["train.epochs=many"], "train.epochs must be int"),
    (["train.lr_t5=fast"], "train.lr_t5 must be float"),
    (["train.cpu=maybe"], "train.cpu must be bool"),
    (["train.epochs=0"], "train.epochs must be at least 1"),
    (["train.nope=1"], "unknown field"),
    (["nope.x=1"], "unknown section"),
    (["model.kind=other"], "model.kind must be"),
    (["train.mixed_precision=fp8"], "mixed_precision"),
    (["epochs=1"], "section.field=value"),
    (["train.batch_size=null"], "cannot be null"),
    (["latent.num_latents=0"], "latent.num_latents must be at least 1"),
    (["latent.encoder_attention_dropout=1.5"], r"latent.encoder_attention_dropout must be in \[0, 1\)"),
    (["baseline.max_input_tokens=4"], "baseline.max_input_tokens must be at least 8"),
    (["sp.top_k=2", "sp.paragraphs=2"], "sp.top_k and paragraphs are two rules"),
    (["data.max_question_tokens=1"], "data.max_question_tokens must be at least 2"),
    (["eval.sp_top_k=1"], r"unknown field\(s\) \['sp_top_k'\] in section 'eval'"),
    (["model.num_latents=16"], r"unknown field\(s\) \['num_latents'\] in section 'model'"),
])
def test_bad_configs_name_the_field_before_any_model_loads(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["model.t5=no/such-model", *overrides])


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: [1, 2")
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path)


def test_a_bare_no_in_a_text_field_means_no(tmp_path):
    """YAML 1.1 reads `no` as false; `train.mixed_precision=no` (as docs/migration.md writes it) must mean 'no'."""
    assert load_config(None, ["train.mixed_precision=no"]).train.mixed_precision == "no"
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  mixed_precision: no\n")
    assert load_config(path).train.mixed_precision == "no"
