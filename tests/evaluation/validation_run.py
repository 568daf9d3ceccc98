"""Run by test_predict.py, as one process and under torchrun as two: the validation loss and predictions of a
seeded tiny latent reader over 5 examples in batches of 2, written as JSON by the main process."""
import json
import sys

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from latentqa.config import EvalConfig
from latentqa.data.features import load_features
from latentqa.data.sources import load_examples
from latentqa.evaluation.predict import predict, validation_loss
from latentqa.data.collate import IndexedRows
from latentqa.readers.latent import LatentConfig, LatentReader
from latentqa.resources import SAMPLE_PATH

t5_dir, encoder_dir, out = sys.argv[1:4]
accelerator = Accelerator(cpu=True)
torch.manual_seed(0)
reader = LatentReader.build(t5_dir, encoder_dir, LatentConfig(num_latents=4, selector_heads=4, gate_init=0.5)).eval()
examples = load_examples(str(SAMPLE_PATH), limit=5)[0]
features = load_features(examples, reader.features, question_tokenizer=reader.t5_tokenizer,
                         context_tokenizer=reader.context_tokenizer, cache_dir=None, progress=False)
loader = accelerator.prepare(DataLoader(IndexedRows(features), batch_size=2, collate_fn=reader.collator()))
losses = validation_loss(reader, loader, accelerator)
predictions = predict(reader, loader, examples, accelerator, EvalConfig(max_new_tokens=3), desc="predict")
if accelerator.is_main_process:
    with open(out, "w") as f:
        json.dump({"processes": accelerator.num_processes, "losses": losses, "answers": predictions.answers}, f)
