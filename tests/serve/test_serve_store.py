"""The durable catalogue: changes survive a restart, compaction survives a crash at each step, and
nothing is ever applied twice."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from lookalike import EmbeddingSet, build_index, load_index
from lookalike.serve import compaction as compaction_module
from lookalike.serve.journal import JOURNAL_FILE, Journal, JournalError, read_journal
from lookalike.serve.store import CatalogueStore, NewItem, ReadOnlyCatalogue
from lookalike.utils.folders import verify_folder

DIM = 8
ROWS = 30


class Crash(Exception):
    """Stands for the process dying at this instant."""


def make_index(folder: Path, kind: str = "flat", **params: int) -> Path:
    vectors = np.random.default_rng(3).normal(size=(ROWS, DIM)).astype(np.float32)
    ids = [f"base-{i:02d}" for i in range(ROWS)]
    gallery = EmbeddingSet(vectors, ids, [""] * ROWS, [str(i % 2) for i in range(ROWS)])
    return build_index(gallery, folder, kind=kind, **params)[1]


def new_item(number: int, image: bool = True) -> NewItem:
    vector = np.random.default_rng(100 + number).normal(size=DIM).astype(np.float32)
    data = f"image {number}".encode() if image else None
    return NewItem(f"new-{number:03d}", f"label-{number % 3}", vector, data, ".png")


def open_store(index: Path, **options: int) -> CatalogueStore:
    return CatalogueStore(index, index.parent / "state", **options)


def live_ids(store: CatalogueStore) -> set[str]:
    return set(store.catalogue.row_of)


def expected_vector(number: int) -> np.ndarray:
    vector = new_item(number).vector
    return vector / np.linalg.norm(vector)


def check_store(store: CatalogueStore, added: list[int], deleted: set[str]) -> None:
    """Every added (and not deleted) item is there once with its vector; nothing else new."""
    base = {f"base-{i:02d}" for i in range(ROWS)}
    expected = (base | {new_item(n).id for n in added}) - deleted
    assert live_ids(store) == expected
    for number in added:
        item = new_item(number).id
        if item in deleted:
            continue
        np.testing.assert_allclose(store.vectors_of([item])[0], expected_vector(number), atol=1e-6)
        _, neighbours = store.search(expected_vector(number)[None], 1)
        assert neighbours[0][0].id == item
        label, path = store.item(item)
        assert label == new_item(number).label
        assert path is not None and path.read_bytes() == new_item(number).image


def test_changes_survive_a_restart(tmp_path: Path) -> None:
    index = make_index(tmp_path / "index")
    store = open_store(index)
    store.add([new_item(1), new_item(2)])
    store.add([new_item(3)])
    store.delete(["new-002", "base-05"])
    store.close()
    again = open_store(index)
    check_store(again, [1, 2, 3], {"new-002", "base-05"})
    assert again.next_seq == 4
    again.close()


def test_a_torn_journal_tail_loses_only_the_unacknowledged_write(tmp_path: Path) -> None:
    index = make_index(tmp_path / "index")
    store = open_store(index)
    store.add([new_item(1)])
    store.close()
    journal = index.parent / "state" / JOURNAL_FILE
    with open(journal, "ab") as handle:  # what a kill during an append leaves behind
        handle.write(b'0123abcd {"seq": 2, "ops": [{"op": "ad')
    again = open_store(index)
    check_store(again, [1], set())
    again.add([new_item(2)])
    again.close()
    check_store(open_store(index), [1, 2], set())


def test_a_damaged_journal_is_refused_with_one_line(tmp_path: Path) -> None:
    index = make_index(tmp_path / "index")
    store = open_store(index)
    for number in range(3):
        store.add([new_item(number)])
    store.close()
    journal = index.parent / "state" / JOURNAL_FILE
    lines = journal.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b"new-000", b"new-999")
    journal.write_bytes(b"\n".join(lines))
    with pytest.raises(JournalError, match="damaged at line 2") as caught:
        open_store(index)
    assert "\n" not in str(caught.value)


def test_a_journal_of_another_index_is_refused(tmp_path: Path) -> None:
    index = make_index(tmp_path / "index")
    store = open_store(index)
    store.add([new_item(1)])
    store.close()
    vectors = np.ones((3, DIM), np.float32)
    build_index(EmbeddingSet(vectors, ["a", "b", "c"], [""] * 3, [None] * 3), index)
    with pytest.raises(JournalError, match="belongs to another index"):
        open_store(index)


def test_compaction_rewrites_the_folder_and_resets_the_journal(tmp_path: Path) -> None:
    index = make_index(tmp_path / "index")
    store = open_store(index)
    store.add([new_item(1), new_item(2)])
    store.delete(["new-001", "base-00"])
    report = store.compact()
    assert report.rows == ROWS + 2 - 2 and report.dropped == 2 and report.journal_seq == 2
    assert store.catalogue.index.ntotal == ROWS and store.catalogue.dead_count == 0
    check_store(store, [1, 2], {"new-001", "base-00"})
    assert read_journal(store.journal.path).transactions == []
    images = sorted(p.name for p in store.images_dir.iterdir())
    assert len(images) == 1  # the deleted item's image went with it
    store.close()
    verify_folder(index, "index")
    _, metadata = load_index(index)
    assert "new-002" in metadata.ids and "new-001" not in metadata.ids
    assert metadata.extra["serve"]["journal_seq"] == 2
    again = open_store(index)
    check_store(again, [1, 2], {"new-001", "base-00"})
    again.add([new_item(3)])
    again.close()
    check_store(open_store(index), [1, 2, 3], {"new-001", "base-00"})


def crash_in_save(monkeypatch: pytest.MonkeyPatch) -> None:
    real = compaction_module.save_index

    def save_then_die(index, folder, *args, **kwargs):
        real(index, folder, *args, **kwargs)
        raise Crash("killed while the new folder was being written")

    monkeypatch.setattr(compaction_module, "save_index", save_then_die)


def crash_before_journal_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    def die(self, header, transactions):
        raise Crash("killed between the folder swap and the journal reset")

    monkeypatch.setattr(Journal, "rewrite", die)


def crash_before_image_cleanup(monkeypatch: pytest.MonkeyPatch) -> None:
    def die(self) -> None:
        raise Crash("killed after the journal reset")

    monkeypatch.setattr(CatalogueStore, "remove_unreferenced_images", die)


@pytest.mark.parametrize(
    "crash", [crash_in_save, crash_before_journal_reset, crash_before_image_cleanup]
)
def test_a_crash_at_any_step_of_compaction_loses_nothing_and_doubles_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash
) -> None:
    index = make_index(tmp_path / "index")
    store = open_store(index)
    store.add([new_item(1), new_item(2)])
    store.delete(["new-002", "base-03"])
    store.add([new_item(3)])
    with monkeypatch.context() as patch:
        crash(patch)
        with pytest.raises(Crash):
            store.compact()
        store.journal.close()  # what the kernel does for a killed process
        store._lock_file.close()
    again = open_store(index)  # replay: each item exactly once (a duplicate would raise)
    check_store(again, [1, 2, 3], {"new-002", "base-03"})
    again.add([new_item(4)])
    again.delete(["new-001"])
    again.compact()
    again.close()
    final = open_store(index)
    check_store(final, [1, 2, 3, 4], {"new-002", "base-03", "new-001"})
    assert final.catalogue.dead_count == 0
    final.close()


def test_additions_during_compaction_are_kept(tmp_path: Path, monkeypatch) -> None:
    index = make_index(tmp_path / "index")
    store = open_store(index)
    store.add([new_item(0)])
    real = compaction_module.save_index
    added_while_saving: list[int] = []

    def slow_save(*args, **kwargs):
        def add_more() -> None:
            for number in (10, 11, 12):
                store.add([new_item(number)])
                added_while_saving.append(number)
            store.delete(["new-000"])

        worker = threading.Thread(target=add_more)
        worker.start()
        worker.join()  # the changes land between the copy of the rows and the swap
        return real(*args, **kwargs)

    monkeypatch.setattr(compaction_module, "save_index", slow_save)
    report = store.compact()
    assert added_while_saving == [10, 11, 12] and report.kept_transactions == 4
    check_store(store, [0, 10, 11, 12], {"new-000"})
    assert [t.seq for t in read_journal(store.journal.path).transactions] == [2, 3, 4, 5]
    store.close()
    check_store(open_store(index), [0, 10, 11, 12], {"new-000"})


@pytest.mark.parametrize(
    ("kind", "params"),
    [("exact_torch", {}), ("flat", {}), ("hnsw", {"M": 8}), ("ivf_flat", {"nlist": 2}),
     ("ivf_pq", {"nlist": 2, "m": 2, "nbits": 4})],
)  # fmt: skip
def test_every_index_kind_compacts(tmp_path: Path, kind: str, params) -> None:
    index = make_index(tmp_path / "index", kind, **params)
    built, _ = load_index(index)
    rows = built.reconstruct()
    store = open_store(index)
    store.add([new_item(1)])
    store.delete(["base-07"])
    store.compact()
    assert store.catalogue.index.ntotal == ROWS and store.catalogue.index.kind == kind
    _, neighbours = store.search(rows[[9]], 1)
    assert neighbours[0][0].id == "base-09"
    store.close()


def test_needs_compaction_after_compact_every_transactions(tmp_path: Path) -> None:
    index = make_index(tmp_path / "index")
    store = open_store(index, compact_every=3)
    store.add([new_item(1)])
    store.add([new_item(2)])
    assert not store.needs_compaction()
    store.delete(["new-001"])
    assert store.needs_compaction()
    store.compact()
    assert not store.needs_compaction()
    store.close()


def test_items_without_images_and_repeated_ids(tmp_path: Path) -> None:
    index = make_index(tmp_path / "index")
    store = open_store(index)
    store.add([new_item(1, image=False)])
    assert store.item("new-001")[1] is None
    with pytest.raises(KeyError, match="already in the catalogue"):
        store.add([new_item(1)])
    with pytest.raises(KeyError, match="repeated"):
        store.add([new_item(2), new_item(2)])
    with pytest.raises(KeyError, match="not in the catalogue"):
        store.delete(["nope"])
    bad = NewItem("nan", None, np.full(DIM, np.nan, np.float32))
    with pytest.raises(ValueError, match="finite"):
        store.add([bad])
    assert store.next_seq == 2  # refused changes took no sequence number
    store.close()


def test_a_relative_state_folder_keeps_its_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = make_index(tmp_path / "index")
    monkeypatch.chdir(tmp_path)
    store = CatalogueStore("index", "state")
    store.add([new_item(1)])
    store.compact()  # removes unreferenced images: the live one must not look unreferenced
    store.close()
    again = CatalogueStore(Path("index"), Path("state"))
    check_store(again, [1], set())
    again.close()
    assert index.is_dir()


def test_a_memory_mapped_index_refuses_changes_before_journaling_them(tmp_path: Path) -> None:
    """A change the index cannot take must not reach the journal: replaying it would fail
    every restart. Searches by item still work (rows are read back from the mapped lists)."""
    index = make_index(tmp_path / "index", "ivf_flat", nlist=2, mmap=True)
    store = open_store(index)
    assert store.info()["read_only"] is True
    for change in (lambda: store.add([new_item(1)]), lambda: store.delete(["base-03"]),
                   store.compact):  # fmt: skip
        with pytest.raises(ReadOnlyCatalogue, match="memory-mapped .*read-only; rebuild it"):
            change()
    assert read_journal(store.journal.path).transactions == []
    assert not any(store.images_dir.iterdir())  # no image written either
    _, neighbours = store.search(store.vectors_of(["base-05"]), 1)
    assert neighbours[0][0].id == "base-05"
    store.close()
    again = open_store(index)  # and it starts again
    assert again.size() == ROWS
    again.close()


def test_a_change_that_fails_to_apply_is_cut_from_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Journaled first, applied second: when applying fails (a Milvus server gone, an index
    refusing rows), the journal line is cut off again, so a restart neither replays a change
    the client was told failed nor fails on it; the changes around it are kept."""
    from lookalike.serve.catalogue import Catalogue

    index = make_index(tmp_path / "index")
    store = open_store(index)
    store.add([new_item(1)])
    real_add = Catalogue.add

    def unavailable(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("the vector store went away")

    monkeypatch.setattr(Catalogue, "add", unavailable)
    for _ in range(2):  # twice: the second cut must start where the first left the file
        with pytest.raises(RuntimeError, match="went away"):
            store.add([new_item(2)])
    monkeypatch.setattr(Catalogue, "add", real_add)
    assert [t.seq for t in read_journal(store.journal.path).transactions] == [1]
    assert len(list(store.images_dir.iterdir())) == 1  # only new-001's image
    assert store.add([new_item(3)]) == 2  # the failed change took no sequence number
    store.delete(["new-001"])
    contents = read_journal(store.journal.path)
    assert [t.seq for t in contents.transactions] == [1, 2, 3] and contents.torn_bytes == 0
    store.close()
    check_store(open_store(index), [3], set())


def test_a_compaction_whose_journal_reset_fails_leaves_a_store_that_takes_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new folder is in place but the journal cannot be rewritten (a full disk): the old
    journal stays open for appending, and a restart replays what the folder lacks."""
    from lookalike.serve import journal as journal_module

    index = make_index(tmp_path / "index")
    store = open_store(index)
    store.add([new_item(1)])
    store.delete(["base-02"])

    def full_disk(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(journal_module, "write_journal", full_disk)
        with pytest.raises(OSError, match="No space left"):
            store.compact()
    store.add([new_item(2)])  # the journal is open again
    store.delete(["new-001"])
    check_store(store, [1, 2], {"base-02", "new-001"})
    store.close()
    check_store(open_store(index), [1, 2], {"base-02", "new-001"})
