"""`index/manifest.py`: a shard's file checked against its size and hash; the manifest read back as written, its
digest naming the exact shards, a strange name or broken file refused naming the file; new shard numbers above
every name in use."""
import pytest

from latentqa.index.manifest import MANIFEST_FILE, SHARDS, IndexFolderError, Manifest, ShardEntry


@pytest.fixture
def folder(tmp_path):
    (tmp_path / SHARDS).mkdir()
    for number, text in ((0, b"first shard"), (1, b"second shard")):
        (tmp_path / SHARDS / f"{number:06d}.safetensors").write_bytes(text)
    return tmp_path


def entries(folder):
    return [ShardEntry.of(folder / SHARDS / f"{n:06d}.safetensors", paragraphs=3, windows=7) for n in (0, 1)]


def test_a_shard_is_checked_by_size_then_by_hash(folder):
    entry = entries(folder)[0]
    assert entry.problem(folder, full=True) is None
    (folder / SHARDS / entry.name).write_bytes(b"first shard!")
    assert entry.problem(folder, full=False) == f"12 bytes, the manifest says {entry.bytes}"
    (folder / SHARDS / entry.name).write_bytes(b"first shart")  # same size, other content
    assert entry.problem(folder, full=False) is None
    assert entry.problem(folder, full=True) == "its content differs from the manifest's hash"
    (folder / SHARDS / entry.name).unlink()
    assert entry.problem(folder, full=True) == "missing"


def test_the_manifest_reads_back_and_its_digest_names_the_exact_shards(folder):
    assert Manifest.read(folder) == Manifest()  # none written yet
    manifest = Manifest(entries(folder))
    manifest.write(folder)
    assert Manifest.read(folder) == manifest
    assert Manifest(manifest.shards[::-1]).digest() != manifest.digest() != Manifest(manifest.shards[:1]).digest()
    assert Manifest(list(manifest.shards)).digest() == manifest.digest()


@pytest.mark.parametrize("text, why", [('{"shards": [{"name": "../escape", "bytes": 1, "sha256": "", "paragraphs": 1, '
                                        '"windows": 1}]}', "not NNNNNN.safetensors"),
                                       ('{"shards": [{"name": "000001.safetensors"}]}', "TypeError"),
                                       ('{"shards": [', "JSONDecodeError")])
def test_a_broken_manifest_is_refused_naming_the_file(folder, text, why):
    (folder / MANIFEST_FILE).write_text(text)
    with pytest.raises(IndexFolderError, match=f"{MANIFEST_FILE}: unreadable.*{why}"):
        Manifest.read(folder)


def test_a_new_shard_number_is_above_every_listed_shard_and_every_shard_file(folder):
    manifest = Manifest(entries(folder)[:1])
    assert manifest.next_number(folder) == 2  # 000001 is not listed, but its name is in use
    (folder / SHARDS / "000007.safetensors").write_bytes(b"stray")
    (folder / SHARDS / ".000009.safetensors.tmp-1-ab").write_bytes(b"a temporary")
    assert manifest.next_number(folder) == 8
