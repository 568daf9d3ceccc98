"""The README is a manual: short, and every link in it and in docs/ resolves."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


def test_readme_is_at_most_12_kb():
    assert len((ROOT / "README.md").read_bytes()) <= 12 * 1024


def test_every_relative_link_resolves():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    checked = 0
    for page in pages:
        for target, _ in LINK.findall(page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to {target}, which is missing"
            checked += 1
    assert checked >= 8


def test_the_migration_table_names_every_flag_of_the_original_scripts():
    text = (ROOT / "docs" / "migration.md").read_text()
    flags = ("--output_dir --batch_size --num_epochs --lr_latent --lr_t5 --lr_encoder --max_context_tokens "
             "--max_question_tokens --max_answer_tokens --freeze_t5_initially --no_gradient_checkpointing "
             "--no_mixed_precision --grad_accum_steps --lr --max_input_tokens --train_file --eval_file").split()
    for flag in flags:
        assert f"`{flag}`" in text, flag


def test_every_config_field_the_docs_name_exists():
    import dataclasses

    from latentqa.training.config import SECTIONS

    fields = {f"{section}.{f.name}" for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    pattern = re.compile(rf"`((?:{'|'.join(SECTIONS)})\.[a-z_0-9]+)")
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        named = set(pattern.findall(page.read_text())) - {"model.safetensors"}
        assert named <= fields, (page.name, sorted(named - fields))
