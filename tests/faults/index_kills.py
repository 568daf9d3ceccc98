"""Run by test_index_faults.py as a program: index builds SIGKILLed at chosen moments, each followed by a rerun, set
against the same build never killed. Each build runs in a forked child, so torch and the reader load once; the
parent runs no torch work before the last child has ended (a fork is safe only then).

    python -m tests.faults.index_kills READER_DIR CORPUS.jsonl WORK_DIR KILLS SEED   → JSON on stdout

Half the kills hit a build from nothing, half a build that grows an index of the corpus's first half. A kill lands
at a chosen event of the build — a file written, fsynced, renamed or removed — before or after it, spread over
the three phases: shard writes, manifest writes, retrieval building.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
from pathlib import Path

SHARD_PARAGRAPHS = 10


def phase() -> str:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name == "build_retrieval":
            return "retrieval"
        if frame.f_code.co_filename.endswith("manifest.py"):
            return "manifest"
        frame = frame.f_back
    return "shard"


def install_killer(kill_at: int, after: bool, events_log: Path) -> None:
    """Count every file event of the build; at event `kill_at` (1-based; 0: never) SIGKILL this process, before
    the event or just after it. Each event's phase goes to `events_log`."""
    import pathlib

    import bm25s
    import safetensors.numpy
    import safetensors.torch

    import latentqa.atomic as atomic

    count = [0]

    def hooked(owner, name):
        real = getattr(owner, name)

        def event(*args, **kwargs):
            count[0] += 1
            with events_log.open("a") as f:
                f.write(phase() + "\n")
            if count[0] == kill_at and not after:
                os.kill(os.getpid(), signal.SIGKILL)
            result = real(*args, **kwargs)
            if count[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        setattr(owner, name, event)

    for owner, name in ((os, "replace"), (atomic, "_fsync"), (safetensors.torch, "save_file"),
                        (safetensors.numpy, "save_file"), (bm25s.BM25, "save"), (pathlib.Path, "rename"),
                        (pathlib.Path, "unlink"), (shutil, "rmtree")):
        hooked(owner, name)


def run_build(reader, paragraphs, directory: Path, kill_at: int, after: bool, events_log: Path) -> int:
    """One build in a forked child; its exit status as `os.waitstatus_to_exitcode` gives it (-9: SIGKILL)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            install_killer(kill_at, after, events_log)
            from latentqa.index.build import build_index

            build_index(reader, paragraphs, directory, reader_name="r", shard_paragraphs=SHARD_PARAGRAPHS,
                        progress=False)
            code = 0
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def main(reader_dir: str, corpus_path: str, work: str, kills: int, seed: int) -> dict:
    import torch

    torch.set_num_threads(1)  # no thread pool in the parent: forking it is then safe, and states are bit-equal
    import latentqa
    from latentqa.data.corpus import load_corpus

    pipeline = latentqa.load_reader(reader_dir, cache_mb=0)
    paragraphs = load_corpus(corpus_path)[0]
    half = paragraphs[:len(paragraphs) // 2]
    work_dir, rng = Path(work), random.Random(seed)

    base = work_dir / "half"
    assert run_build(pipeline.reader, half, base, 0, False, work_dir / "base.events") == 0
    references, phases = {}, {}
    for start in ("empty", "grown"):
        reference = work_dir / f"reference-{start}"
        if start == "grown":
            shutil.copytree(base, reference)
        log = work_dir / f"{start}.events"
        assert run_build(pipeline.reader, paragraphs, reference, 0, False, log) == 0
        references[start], phases[start] = reference, log.read_text().split()

    trials = []
    for number in range(kills):
        start = ("empty", "grown")[number % 2]
        events = phases[start]
        wanted = ("shard", "manifest", "retrieval")[number // 2 % 3]  # each phase in turn
        kill_at = 1 + rng.choice([i for i, p in enumerate(events) if p == wanted])
        after = rng.random() < 0.5
        directory = work_dir / f"trial-{number}"
        if start == "grown":
            shutil.copytree(base, directory)
        killed = run_build(pipeline.reader, paragraphs, directory, kill_at, after, work_dir / "trial.events")
        rerun = run_build(pipeline.reader, paragraphs, directory, 0, False, work_dir / "trial.events")
        trials.append({"start": start, "phase": events[kill_at - 1], "event": kill_at, "after": after,
                       "killed_status": killed, "rerun_status": rerun, "directory": str(directory)})
    return compare(pipeline, references, trials)


def compare(pipeline, references: dict, trials: list[dict]) -> dict:
    """Every trial's index against its reference: the paragraphs and their states, and what two-hop and dense
    retrieval return for every question of the shipped sample; leftover files named."""
    import torch

    from latentqa.data.sources import load_examples
    from latentqa.index.retrieval import RetrievalConfig, Retriever
    from latentqa.index.store import IndexStore
    from latentqa.resources import SAMPLE_PATH

    questions = [ex.question for ex in load_examples(str(SAMPLE_PATH))[0]]
    vectors = [pipeline.question_vector(q) for q in questions]

    def snapshot(directory: Path) -> dict:
        store = IndexStore(directory)
        results = {}
        for method in ("two-hop", "dense"):
            retriever = Retriever(store, RetrievalConfig(method=method))
            results[method] = [[(h.title, h.score) for h in retriever.search(q, v, 10)]
                               for q, v in zip(questions, vectors)]
        states = {p.title: store.paragraph_states(row) for row, p in enumerate(store.paragraphs)}
        return {"titles": [p.title for p in store.paragraphs], "results": results, "states": states}

    expected = {start: snapshot(directory) for start, directory in references.items()}
    for trial in trials:
        directory = Path(trial["directory"])
        got, want = snapshot(directory), expected[trial["start"]]
        trial["same_paragraphs"] = got["titles"] == want["titles"]
        trial["same_states"] = got["states"].keys() == want["states"].keys() and all(
            len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))
            for a, b in zip(got["states"].values(), (want["states"][t] for t in got["states"])))
        trial["same_retrieval"] = got["results"] == want["results"]
        trial["leftovers"] = sorted(str(p.relative_to(directory)) for p in directory.rglob("*")
                                    if ".tmp-" in p.name or ".trash-" in p.name)
        trial["files"] = sorted(p.name for p in (directory / "shards").iterdir())
        trial["reference_files"] = sorted(p.name for p in (references[trial["start"]] / "shards").iterdir())
    return {"questions": len(questions), "trials": trials}


if __name__ == "__main__":
    reader_dir, corpus_path, work, kills, seed = sys.argv[1:]
    print(json.dumps(main(reader_dir, corpus_path, work, int(kills), int(seed))))
