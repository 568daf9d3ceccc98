"""The index under faults (docs/reliability.md, "The index"): builds SIGKILLed at random moments and rerun equal
one never killed; one build at a time; a server keeps its snapshot while a build grows the index; every damaged
file is named in one line and rebuilt by the next build; hostile corpus lines stop on their line; questions with
no indexed term are answered and empty ones refused, through Python, the CLI and HTTP; edited and removed
paragraphs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import latentqa
from latentqa.atomic import folder_lock
from latentqa.cli import main
from latentqa.data.corpus import load_corpus
from latentqa.data.examples import DataError, Paragraph
from latentqa.index import build as build_module
from latentqa.index.build import build_index
from latentqa.index.manifest import IndexFolderError
from latentqa.index.retrieval import Retriever
from latentqa.index.store import IndexStore
from latentqa.serving.queries import RequestError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus(sample_path):
    return load_corpus(str(sample_path))[0][:60]


@pytest.fixture(scope="module")
def reader(index_reader_dir):
    return latentqa.load_reader(index_reader_dir, cache_mb=0).reader


def build(reader, paragraphs, directory, **options):
    return build_index(reader, paragraphs, directory, reader_name="r", shard_paragraphs=20, progress=False,
                       **options)


def retrieval(directory, questions) -> list:
    """Two-hop titles and scores for each (question, its vector from the reader's encoder)."""
    retriever = Retriever(IndexStore(directory))
    return [[(h.title, h.score) for h in retriever.search(q, v, 10)] for q, v in questions]


def one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.slow
def test_twenty_sigkills_then_reruns_equal_a_build_never_killed(index_reader_dir, corpus, tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"title": p.title, "sentences": list(p.sentences)}) + "\n" for p in corpus))
    result = subprocess.run([sys.executable, "-m", "tests.faults.index_kills", str(index_reader_dir), str(path),
                             str(tmp_path / "work"), "20", "0"], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    trials = report["trials"]
    assert len(trials) == 20 and report["questions"] == 53
    assert {t["phase"] for t in trials} == {"shard", "manifest", "retrieval"}
    assert {t["start"] for t in trials} == {"empty", "grown"}
    for trial in trials:
        assert trial["killed_status"] == -9 and trial["rerun_status"] == 0, trial
        assert trial["same_paragraphs"] and trial["same_states"] and trial["same_retrieval"], trial
        assert trial["leftovers"] == [] and trial["files"] == trial["reference_files"], trial


def test_a_second_build_is_refused_while_one_runs(reader, corpus, tmp_path, capsys):
    directory = tmp_path / "index"
    build(reader, corpus[:20], directory)
    with folder_lock(directory, "an index build"):  # as another process holding it would
        with pytest.raises(IndexFolderError) as err:
            build(reader, corpus, directory)
        assert "under way" in one_line(err) and str(directory) in one_line(err)
    assert len(IndexStore(directory)) == 20  # untouched
    assert build(reader, corpus, directory).paragraphs == 60  # the lock goes with its holder


def test_a_server_keeps_its_snapshot_while_a_build_grows_the_index(index_reader_dir, reader, corpus, tmp_path,
                                                                   monkeypatch, sample_examples):
    directory = tmp_path / "index"
    build(reader, corpus[:30], directory)
    serving = latentqa.load_reader(index_reader_dir, cache_mb=0, index=directory, top_k=3)
    question = sample_examples[0].question
    before = serving.answer(question, max_new_tokens=3)
    opened_mid_build = []
    real = build_module.build_retrieval

    def open_then_build(store, *args):  # a reader opening between the last shard and the new retrieval files
        with pytest.raises(IndexFolderError) as err:
            Retriever(IndexStore(directory))
        opened_mid_build.append(one_line(err))
        real(store, *args)

    monkeypatch.setattr(build_module, "build_retrieval", open_then_build)
    build(reader, corpus, directory)
    assert "interrupted" in opened_mid_build[0] and "latentqa index" in opened_mid_build[0]
    after = serving.answer(question, max_new_tokens=3)  # the old snapshot, whole: same retrieval, same answer
    assert [(h.title, h.score) for h in after.retrieved] == [(h.title, h.score) for h in before.retrieved]
    assert after.answer == before.answer
    assert len(latentqa.load_reader(index_reader_dir, cache_mb=0, index=directory).retriever.store) == 60


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {  # what is damaged, how; True where opening the index names it (False: a same-size change inside a
    # shard's states, found by the next build's hash check)
    "manifest": (lambda d: (d / "manifest.json").write_text("{not json"), "manifest.json", True),
    "shard truncated": (lambda d: _truncate(d / "shards" / "000001.safetensors"), "000001.safetensors", True),
    "shard deleted": (lambda d: (d / "shards" / "000000.safetensors").unlink(), "000000.safetensors", True),
    "shard states flipped": (lambda d: _flip_last_byte(d / "shards" / "000002.safetensors"), None, False),
    "retrieval.json": (lambda d: (d / "retrieval.json").write_text("[]"), "retrieval.json", True),
    "links": (lambda d: _retrieval_file(d, "links.safetensors").write_bytes(b"garbage"), "links.safetensors", True),
    "bm25 truncated": (lambda d: _truncate(_retrieval_file(d, "bm25/data.csc.index.npy")), "data.csc.index.npy",
                       True),
    "bm25 same size": (lambda d: _flip_last_byte(_retrieval_file(d, "bm25/data.csc.index.npy")),
                       "data.csc.index.npy", True),
}


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _retrieval_file(directory: Path, name: str) -> Path:
    return directory / json.loads((directory / "retrieval.json").read_text())["folder"] / name


@pytest.fixture(scope="module")
def reference(index_reader_dir, reader, corpus, tmp_path_factory, sample_examples):
    directory = tmp_path_factory.mktemp("reference") / "index"
    build(reader, corpus, directory)
    encoder = latentqa.load_reader(index_reader_dir, cache_mb=0)
    questions = [(ex.question, encoder.question_vector(ex.question)) for ex in sample_examples]
    return directory, questions, retrieval(directory, questions)


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_file_is_named_in_one_line_and_rebuilt_by_the_next_build(reader, corpus, reference, tmp_path,
                                                                           damage):
    import shutil

    source, questions, expected = reference
    directory = tmp_path / "index"
    shutil.copytree(source, directory)
    do, named, on_open = DAMAGE[damage]
    do(directory)
    if on_open:
        with pytest.raises(IndexFolderError) as err:
            Retriever(IndexStore(directory))
        assert named in one_line(err) and "latentqa index" in one_line(err)
    report = build(reader, corpus, directory)
    assert report.paragraphs == 60
    if damage.startswith("shard"):
        assert report.repaired and report.added == 20  # that shard's paragraphs, encoded again
    assert sorted(p.title for p in IndexStore(directory).paragraphs) == sorted(p.title for p in corpus)
    got = retrieval(directory, questions)
    if damage.startswith("shard"):  # rows moved: the repaired shard's paragraphs come last; same scores, to the
        # rounding of a matrix product over windows in another order
        for mine, theirs in zip(got, expected):
            assert sorted(t for t, _ in mine) == sorted(t for t, _ in theirs)
            assert dict(mine) == pytest.approx(dict(theirs), abs=1e-5)
    else:
        assert got == expected


def test_a_stray_file_among_the_shards_is_never_read(reader, corpus, reference, tmp_path):
    import shutil

    source, questions, expected = reference
    directory = tmp_path / "index"
    shutil.copytree(source, directory)
    shutil.copy(directory / "shards" / "000000.safetensors", directory / "shards" / "000000 copy.safetensors")
    assert len(IndexStore(directory)) == 60 and retrieval(directory, questions) == expected
    build(reader, corpus, directory)
    assert not (directory / "shards" / "000000 copy.safetensors").exists()


def test_hostile_corpus_lines_stop_on_their_line(reader, tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"title": "Fine", "text": "A sentence."}\n{"title": "Bad", "text": "A \\ud800 lone half."}\n')
    with pytest.raises(DataError, match=r"corpus.jsonl, line 2: not valid Unicode"):
        load_corpus(str(path))
    with pytest.raises(DataError, match="'Bad': not valid Unicode") as err:  # the Python API, before any work
        build(reader, [Paragraph("Fine", ("A sentence.",)), Paragraph("Bad", ("A \ud800 lone half.",))],
              tmp_path / "index")
    assert not (tmp_path / "index").exists() or not any((tmp_path / "index").iterdir())
    del err


def test_edited_paragraphs_are_encoded_again_and_pruned_ones_removed(reader, corpus, tmp_path):
    directory = tmp_path / "index"
    build(reader, corpus, directory)
    edited = Paragraph(corpus[25].title, ("An entirely new first sentence.", *corpus[25].sentences[1:]))
    new_corpus = corpus[:25] + [edited] + corpus[26:]
    encoded = []
    real = build_module.encode_shard
    build_module.encode_shard = lambda *args: (encoded.extend(p.title for p in args[1]), real(*args))[1]
    try:
        report = build(reader, new_corpus, directory)
    finally:
        build_module.encode_shard = real
    store = IndexStore(directory)
    assert report.removed == 1 and store.paragraphs[store.rows[edited.title]] == edited
    assert set(encoded) == {p.title for p in corpus[20:40]}  # its shard's paragraphs, the edited one with them
    assert sorted(p.title for p in store.paragraphs) == sorted(p.title for p in corpus)
    fresh = tmp_path / "fresh"
    build(reader, new_corpus, fresh)
    for title in (edited.title, corpus[0].title):
        a, b = IndexStore(directory), IndexStore(fresh)
        assert [s.tolist() for s in a.paragraph_states(a.rows[title])] == \
            [s.tolist() for s in b.paragraph_states(b.rows[title])]
    report = build(reader, new_corpus[:40], directory, prune=True)
    assert report.paragraphs == 40 and report.removed == 20
    assert {p.title for p in IndexStore(directory).paragraphs} == {p.title for p in new_corpus[:40]}
    assert build(reader, new_corpus[:40], directory).added == 0


@pytest.mark.parametrize("question", ["?", "Is it?", "a b c", "the the the " * 100])
def test_questions_with_no_indexed_term_are_answered(index_reader_dir, reference, question):
    pipeline = latentqa.load_reader(index_reader_dir, cache_mb=0, index=reference[0], top_k=3)
    answer = pipeline.answer(question, max_new_tokens=2)
    assert len(answer.retrieved) == 3


def test_empty_and_over_long_questions_are_refused_in_one_line(index_reader_dir, reference, capsys):
    from latentqa.serving.app import create_app

    from ..serving.conftest import ServerThread

    index = str(reference[0])
    assert main(["ask", "--model", str(index_reader_dir), "--index", index, "--max-new-tokens", "2", "?"]) == 0
    capsys.readouterr()
    for question in ("", "x" * 5000):
        assert main(["ask", "--model", str(index_reader_dir), "--index", index, question]) == 2
        err = capsys.readouterr().err
        assert err.startswith("latentqa: error: question") and err.count("\n") == 1
    pipeline = latentqa.load_reader(index_reader_dir, cache_mb=0, index=index, top_k=3)
    with pytest.raises(RequestError, match="question"):
        pipeline.answer("")
    with ServerThread(create_app(pipeline, generation=pipeline.generation(max_new_tokens=2))) as server:
        for question, status in (("?", 200), ("the the the " * 100, 200), ("", 422), ("x" * 5000, 422)):
            got, reply = server.request("POST", "/v1/answer", {"question": question})
            assert got == status, reply


def test_predict_from_the_index_answers_every_example_of_a_data_file(index_reader_dir, reference, sample_path, tmp_path):
    """A data file's questions are read as in training (cut to the reader's question length): an empty or
    over-long one is predicted like any other, never a crash that writes nothing."""
    data = json.loads(sample_path.read_text())[:3]
    data[1]["question"], data[2]["question"] = "", "x " * 3000
    path = tmp_path / "three.json"
    path.write_text(json.dumps(data))
    assert main(["predict", "--model", str(index_reader_dir), "--index", str(reference[0]), "--data", str(path),
                 "--max-new-tokens", "2", "--out", str(tmp_path / "pred.json")]) == 0
    assert set(json.loads((tmp_path / "pred.json").read_text())["answer"]) == {ex["_id"] for ex in data}
