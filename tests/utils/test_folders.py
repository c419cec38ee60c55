"""Verified, atomically replaced folders: manifests catch damage, swaps never leave a mix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lookalike.utils import folders
from lookalike.utils.folders import (
    MANIFEST_FILE,
    ArtefactError,
    atomic_folder,
    check_replaceable,
    link_verified_files,
    partial_path,
    recover_folder,
    verify_folder,
    write_manifest,
)


def _build(target: Path, version: str, **kwargs: object) -> None:
    with atomic_folder(target, **kwargs) as folder:  # type: ignore[arg-type]
        (folder / "a.bin").write_bytes(version.encode() * 100)
        (folder / "sub").mkdir(exist_ok=True)
        (folder / "sub" / "b.txt").write_text(version)
        write_manifest(folder, "thing", fingerprint="f1", extra={"version": version})


def test_manifest_lists_every_file_and_verifies(tmp_path: Path) -> None:
    _build(tmp_path / "out", "v1")
    manifest = verify_folder(tmp_path / "out", kind="thing")
    assert sorted(manifest.files) == ["a.bin", "sub/b.txt"]
    assert manifest.fingerprint == "f1" and manifest.extra == {"version": "v1"}
    assert manifest.files["a.bin"].size == 200
    with pytest.raises(ArtefactError, match="holds thing, not index"):
        verify_folder(tmp_path / "out", kind="index")


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "no_manifest", "bad_manifest"])
def test_damage_is_refused_naming_the_file(tmp_path: Path, damage: str) -> None:
    target = tmp_path / "out"
    _build(target, "v1")
    data = target / "a.bin"
    if damage == "truncate":
        data.write_bytes(data.read_bytes()[:50])
        needle = "a.bin has 50 bytes"
    elif damage == "flip":
        raw = bytearray(data.read_bytes())
        raw[7] ^= 1
        data.write_bytes(bytes(raw))
        needle = "a.bin does not match its checksum"
    elif damage == "delete":
        (target / "sub" / "b.txt").unlink()
        needle = "b.txt is missing"
    elif damage == "no_manifest":
        (target / MANIFEST_FILE).unlink()
        needle = "manifest.json is missing"
    else:
        (target / MANIFEST_FILE).write_text("{not json")
        needle = "manifest.json is damaged"
    with pytest.raises(ArtefactError, match=needle):
        verify_folder(target)


def test_an_edited_manifest_is_named_as_damaged(tmp_path: Path) -> None:
    target = tmp_path / "out"
    _build(target, "v1")
    manifest = target / MANIFEST_FILE
    manifest.write_text(manifest.read_text().replace('"a.bin"', '"a.bim"'))  # still valid JSON
    with pytest.raises(ArtefactError, match="manifest.json is damaged .its own checksum"):
        verify_folder(target)


def test_a_failed_resumable_build_with_nothing_done_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "out", resume=True) as folder:
        (folder / "empty-dir").mkdir()
        raise RuntimeError("failed before any work")
    assert list(tmp_path.iterdir()) == []


def test_helpers_refuse_foreign_folders_and_reuse_only_matching_files(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("x")
    with pytest.raises(ArtefactError, match="not a lookalike thing folder"):
        check_replaceable(mine, "thing")
    check_replaceable(mine, "thing", legacy_files=("notes.txt",))
    _build(tmp_path / "out", "v1")
    with pytest.raises(ArtefactError, match="holds thing, not other"):
        check_replaceable(tmp_path / "out", "other")
    check_replaceable(tmp_path / "out", "thing")
    (tmp_path / "out" / "sub" / "b.txt").write_text("changed")
    linked = link_verified_files(tmp_path / "out", tmp_path / "new")
    assert linked == ["a.bin"]
    assert (tmp_path / "new" / "a.bin").stat().st_ino == (tmp_path / "out" / "a.bin").stat().st_ino
    assert link_verified_files(mine, tmp_path / "other") == []


def test_replacing_swaps_whole_and_a_failure_leaves_the_old(tmp_path: Path) -> None:
    target = tmp_path / "out"
    _build(target, "v1")
    _build(target, "v2")
    assert (target / "sub" / "b.txt").read_text() == "v2"
    assert not partial_path(target).exists()
    with pytest.raises(RuntimeError), atomic_folder(target) as folder:
        (folder / "a.bin").write_bytes(b"half")
        raise RuntimeError("killed")
    assert (target / "sub" / "b.txt").read_text() == "v2"
    verify_folder(target)
    assert not partial_path(target).exists()


def test_forgetting_the_manifest_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ArtefactError, match="write the manifest last"), atomic_folder(
        tmp_path / "out"
    ) as folder:
        (folder / "a.bin").write_bytes(b"x")
    assert not (tmp_path / "out").exists()


def test_resume_keeps_unfinished_work_but_not_a_finished_leftover(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_folder(target, resume=True) as folder:
        (folder / "shard-0").write_text("done")
        raise RuntimeError("killed")
    with atomic_folder(target, resume=True) as folder:
        assert (folder / "shard-0").read_text() == "done"
        write_manifest(folder, "thing")
    partial = partial_path(target)
    partial.mkdir()
    (partial / MANIFEST_FILE).write_text("{}")  # an old version an exchange left behind
    with atomic_folder(target, resume=True) as folder:
        assert not (folder / MANIFEST_FILE).exists()
        write_manifest(folder, "thing")


@pytest.mark.parametrize("finished", [True, False])
def test_recovery_of_a_fallback_swap_cut_between_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, finished: bool
) -> None:
    monkeypatch.setattr(folders, "_exchange", lambda first, second: False)
    target = tmp_path / "out"
    _build(target, "v1")
    _build(target, "v2")  # the fallback path end to end
    assert (target / "sub" / "b.txt").read_text() == "v2"
    # Now the state a kill leaves after "target -> .out.old" and before "partial -> target".
    built = partial_path(target)
    built.mkdir()
    (built / "a.bin").write_text("v3")
    if finished:
        write_manifest(built, "thing")
    os.rename(target, tmp_path / ".out.old")
    recover_folder(target)
    verify_folder(target)
    assert (target / "a.bin").read_text() == ("v3" if finished else "v2" * 100)
    assert not (tmp_path / ".out.old").exists()


WRITER = """
import sys
from pathlib import Path
from lookalike.utils.folders import atomic_folder, write_manifest
target = Path(sys.argv[1])
version = 0
while True:
    version += 1
    with atomic_folder(target) as folder:
        for i in range(20):
            (folder / f"part{i}.txt").write_text(str(version) * 2000)
        write_manifest(folder, "thing", extra={"version": version})
"""


@pytest.mark.parametrize("exchange", [True, False])
def test_kill_9_at_random_instants_never_leaves_a_mix(tmp_path: Path, exchange: bool) -> None:
    target = tmp_path / "out"
    script = WRITER if exchange else WRITER.replace(
        "from lookalike.utils.folders import", "import lookalike.utils.folders as f\n"
        "f._exchange = lambda a, b: False\nfrom lookalike.utils.folders import"
    )
    for delay in (0.3, 0.45, 0.6, 0.75, 0.9):
        process = subprocess.Popen([sys.executable, "-c", script, str(target)])
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if not target.exists() and not (tmp_path / ".out.old").exists():
            continue  # killed before the first version was swapped in
        manifest = verify_folder(target)
        version = str(manifest.extra["version"])
        assert all(
            (target / f"part{i}.txt").read_text() == version * 2000 for i in range(20)
        )
