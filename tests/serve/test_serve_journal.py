"""The journal: checksummed lines, a torn last write recognised and cut off, damage refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lookalike.serve.journal import (
    Journal,
    JournalError,
    JournalHeader,
    Operation,
    Transaction,
    decode_line,
    encode_line,
    read_journal,
)

HEADER = JournalHeader(base="gen-1", dim=4, fingerprint="abc")


def add(seq: int, item: str, value: float = 1.0) -> Transaction:
    vector = np.full(4, value, dtype=np.float32)
    return Transaction(seq, (Operation("add", item, "cat", f"images/{item}.png", vector),))


def journal_with(path: Path, count: int) -> Journal:
    journal, _ = Journal.open(path, HEADER)
    for seq in range(1, count + 1):
        journal.append(add(seq, f"item-{seq}", float(seq)))
    return journal


def test_lines_round_trip_and_checksums_catch_any_change() -> None:
    line = encode_line(add(3, "x", 0.5).to_json())
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    record = decode_line(line[:-1])
    assert record is not None and record["seq"] == 3
    operation = Operation.from_json(record["ops"][0])
    assert operation.id == "x" and operation.label == "cat"
    np.testing.assert_array_equal(operation.vector, np.full(4, 0.5, np.float32))
    flipped = bytearray(line[:-1])
    flipped[40] ^= 1
    assert decode_line(bytes(flipped)) is None
    assert decode_line(b"garbage") is None and decode_line(b"") is None


def test_a_journal_reads_back_what_was_appended(tmp_path: Path) -> None:
    path = tmp_path / "journal.log"
    journal_with(path, 3).close()
    contents = read_journal(path)
    assert contents.header == HEADER and contents.torn_bytes == 0
    assert [t.seq for t in contents.transactions] == [1, 2, 3]
    assert [t.operations[0].id for t in contents.transactions] == ["item-1", "item-2", "item-3"]
    deletion = Transaction(4, (Operation("delete", "item-2"),))
    journal, _ = Journal.open(path, HEADER)
    journal.append(deletion)
    journal.close()
    assert read_journal(path).transactions[-1] == deletion


@pytest.mark.parametrize(
    "tail",
    [b"5f3a", b'0123456789abcdef {"seq": 4, "ops"', b"0123456789abcdef {}\n", b"\x00" * 64],
)
def test_a_torn_last_write_is_ignored_and_cut_off(tmp_path: Path, tail: bytes) -> None:
    path = tmp_path / "journal.log"
    journal_with(path, 3).close()
    good = path.stat().st_size
    with open(path, "ab") as handle:
        handle.write(tail)
    contents = read_journal(path)
    assert [t.seq for t in contents.transactions] == [1, 2, 3]
    assert contents.good_bytes == good and contents.torn_bytes == len(tail)
    journal, opened = Journal.open(path, HEADER)  # cuts the tail before appending
    assert path.stat().st_size == good and len(opened.transactions) == 3
    journal.append(add(4, "item-4"))
    journal.close()
    assert [t.seq for t in read_journal(path).transactions] == [1, 2, 3, 4]


def test_a_damaged_line_before_good_ones_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.log"
    journal_with(path, 3).close()
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2][:20] + b"X" + lines[2][21:]
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(JournalError, match="damaged at line 3"):
        read_journal(path)


def test_sequence_numbers_must_increase(tmp_path: Path) -> None:
    path = tmp_path / "journal.log"
    journal, _ = Journal.open(path, HEADER)
    journal.append(add(5, "a"))
    journal.append(add(5, "b"))
    journal.close()
    with pytest.raises(JournalError, match="sequence 5 after 5"):
        read_journal(path)


def test_a_file_that_is_not_a_journal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.log"
    path.write_bytes(encode_line({"format": "something-else"}))
    with pytest.raises(JournalError, match="does not start with a lookalike journal header"):
        read_journal(path)


def test_rewrite_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "journal.log"
    journal = journal_with(path, 4)
    new_header = JournalHeader("gen-2", 4, "abc")
    kept = read_journal(path).transactions[2:]
    journal.rewrite(new_header, kept)
    journal.append(add(5, "item-5"))
    journal.close()
    contents = read_journal(path)
    assert contents.header == new_header
    assert [t.seq for t in contents.transactions] == [3, 4, 5]
    assert not list(tmp_path.glob(".*tmp"))  # no temporary left behind


def test_an_empty_or_missing_file_starts_a_new_journal(tmp_path: Path) -> None:
    path = tmp_path / "journal.log"
    journal, contents = Journal.open(path, HEADER)
    journal.close()
    assert contents.header == HEADER and contents.transactions == []
    assert read_journal(path).header == HEADER
