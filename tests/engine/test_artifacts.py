"""Packing path outputs and unpacking them safely (aihub.engine.artifacts)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from aihub.engine.artifacts import ArtifactError, _filtered_mode, pack, sha256_file, unpack

Member = tuple[tarfile.TarInfo, bytes | None]


def _info(
    name: str, type_: bytes = tarfile.REGTYPE, *, linkname: str = "", mode: int = 0o644
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = type_
    info.linkname = linkname
    info.mode = mode
    return info


def _craft(path: Path, *members: Member) -> Path:
    """Write a gzip tar holding exactly ``members``, bypassing every check that ``pack`` makes."""
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is None:
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _file(name: str, data: bytes = b"x") -> Member:
    return _info(name), data


def _tree(root: Path) -> dict[str, object]:
    """A comparable picture of a directory: files by content, dirs, symlinks by target."""
    out: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = (path.read_bytes(), os.access(path, os.X_OK))
    return out


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "src" / "out"
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "empty_dir").mkdir()
    (root / "top.txt").write_text("top\n")
    (root / "a" / "b" / "c" / "deep.bin").write_bytes(bytes(range(256)) * 10)
    (root / "a" / "empty").write_bytes(b"")
    script = root / "a" / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    (root / "a" / "link_to_top").symlink_to("../top.txt")
    return root


# ------------------------------------------------------------------------------------------- roundtrips


def test_roundtrip_file(tmp_path: Path) -> None:
    src = tmp_path / "result.txt"
    src.write_bytes(b"hello\nworld\n")
    archive = tmp_path / "a.tgz"
    pack(src, archive)
    target = tmp_path / "elsewhere" / "deeper" / "result.txt"
    unpack(archive, target)
    assert target.is_file()
    assert target.read_bytes() == b"hello\nworld\n"


def test_roundtrip_file_keeps_executable_bit(tmp_path: Path) -> None:
    src = tmp_path / "tool"
    src.write_bytes(b"#!/bin/sh\n")
    src.chmod(0o700)
    pack(src, tmp_path / "a.tgz")
    unpack(tmp_path / "a.tgz", tmp_path / "restored")
    assert os.access(tmp_path / "restored", os.X_OK)


def test_roundtrip_directory(tree: Path, tmp_path: Path) -> None:
    archive = tmp_path / "a.tgz"
    pack(tree, archive)
    target = tmp_path / "dst" / "out"
    unpack(archive, target)
    assert _tree(target) == _tree(tree)
    assert (target / "a" / "empty").read_bytes() == b""
    assert (target / "empty_dir").is_dir()
    assert (target / "a" / "link_to_top").read_text() == "top\n"


def test_roundtrip_directory_into_existing_empty_dir(tree: Path, tmp_path: Path) -> None:
    pack(tree, tmp_path / "a.tgz")
    target = tmp_path / "existing"
    target.mkdir()
    unpack(tmp_path / "a.tgz", target)
    assert _tree(target) == _tree(tree)


def test_unpack_refuses_non_empty_existing_dir(tree: Path, tmp_path: Path) -> None:
    pack(tree, tmp_path / "a.tgz")
    target = tmp_path / "existing"
    target.mkdir()
    (target / "keep").write_text("mine")
    with pytest.raises(ArtifactError, match="cannot restore"):
        unpack(tmp_path / "a.tgz", target)
    assert (target / "keep").read_text() == "mine"


def test_unpack_replaces_symlink_at_target_instead_of_writing_through_it(tmp_path: Path) -> None:
    """Hazard: a pre-existing symlink at the target path would redirect the write outside."""
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    target = tmp_path / "work" / "result.txt"
    target.parent.mkdir()
    target.symlink_to(outside)
    src = tmp_path / "new.txt"
    src.write_text("new")
    pack(src, tmp_path / "a.tgz")
    unpack(tmp_path / "a.tgz", target)
    assert not target.is_symlink()
    assert target.read_text() == "new"
    assert outside.read_text() == "precious"


def test_internal_hardlink_is_restored(tmp_path: Path) -> None:
    archive = _craft(
        tmp_path / "a.tgz",
        _file("data.txt", b"shared"),
        (_info("alias.txt", tarfile.LNKTYPE, linkname="data.txt"), None),
    )
    unpack(archive, tmp_path / "out")
    assert (tmp_path / "out" / "alias.txt").read_bytes() == b"shared"


# ---------------------------------------------------------------------------------------- determinism


def test_pack_is_deterministic(tree: Path, tmp_path: Path) -> None:
    pack(tree, tmp_path / "one.tgz")
    for path in [tree, *tree.rglob("*")]:
        os.utime(path, (1_000_000, 1_000_000), follow_symlinks=False)
    (tree / "top.txt").chmod(0o600)  # permissions other than the executable bit do not count
    pack(tree, tmp_path / "two.tgz")
    assert sha256_file(tmp_path / "one.tgz") == sha256_file(tmp_path / "two.tgz")
    assert (tmp_path / "one.tgz").read_bytes() == (tmp_path / "two.tgz").read_bytes()


def test_pack_digest_changes_with_content(tree: Path, tmp_path: Path) -> None:
    pack(tree, tmp_path / "one.tgz")
    (tree / "a" / "empty").write_bytes(b"!")
    pack(tree, tmp_path / "two.tgz")
    assert sha256_file(tmp_path / "one.tgz") != sha256_file(tmp_path / "two.tgz")


def test_pack_same_content_in_different_places_gives_same_digest(tmp_path: Path) -> None:
    for where in ("x", "y"):
        (tmp_path / where / "out").mkdir(parents=True)
        (tmp_path / where / "out" / "f").write_text("same")
        pack(tmp_path / where / "out", tmp_path / f"{where}.tgz")
    assert sha256_file(tmp_path / "x.tgz") == sha256_file(tmp_path / "y.tgz")


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# ----------------------------------------------------------------------------------------- pack errors


def test_pack_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ArtifactError, match=f"output path '{missing}' does not exist"):
        pack(missing, tmp_path / "a.tgz")
    assert not (tmp_path / "a.tgz").exists()


@pytest.mark.parametrize("link_target", ["/etc/passwd", "../../outside", "."])
def test_pack_refuses_symlink_leaving_the_tree(tmp_path: Path, link_target: str) -> None:
    root = tmp_path / "out"
    root.mkdir()
    (root / "evil").symlink_to(link_target)
    if link_target == ".":  # harmless alone; escapes through a second link: `chain -> evil/..`
        (root / "chain").symlink_to("evil/..")
    with pytest.raises(ArtifactError, match="symlink"):
        pack(root, tmp_path / "a.tgz")
    assert not (tmp_path / "a.tgz").exists()


def test_pack_refuses_fifo(tmp_path: Path) -> None:
    root = tmp_path / "out"
    root.mkdir()
    os.mkfifo(root / "pipe")
    with pytest.raises(ArtifactError, match="'pipe'"):
        pack(root, tmp_path / "a.tgz")


# -------------------------------------------------------------------------------------- unpack refusals


def _refuse(archive: Path, target: Path, match: str, **limits: int) -> None:
    with pytest.raises(ArtifactError, match=match):
        unpack(archive, target, **limits)
    assert not os.path.lexists(target)
    leftovers = [p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")]
    assert leftovers == []


def test_refuses_absolute_member(tmp_path: Path) -> None:
    archive = _craft(tmp_path / "a.tgz", _file("ok"), _file("/tmp/aihub-evil"))
    _refuse(archive, tmp_path / "out", "'/tmp/aihub-evil': absolute path")


def test_refuses_dotdot_member(tmp_path: Path) -> None:
    archive = _craft(tmp_path / "a.tgz", _file("sub/../../evil"))
    _refuse(archive, tmp_path / "out", r"'sub/\.\./\.\./evil': '\.\.' component")
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("link_target", ["/etc/passwd", "../outside", "sub/../../outside"])
def test_refuses_symlink_escaping(tmp_path: Path, link_target: str) -> None:
    archive = _craft(tmp_path / "a.tgz", (_info("evil", tarfile.SYMTYPE, linkname=link_target), None))
    _refuse(archive, tmp_path / "out", "'evil': symlink to .* escapes the target")


def test_refuses_symlink_chain_escaping(tmp_path: Path) -> None:
    """Hazard: each link looks harmless alone (`r -> q/..` before `q -> .`) but `r` resolves to the parent."""
    archive = _craft(
        tmp_path / "a.tgz",
        (_info("r", tarfile.SYMTYPE, linkname="q/.."), None),
        (_info("q", tarfile.SYMTYPE, linkname="."), None),
    )
    _refuse(archive, tmp_path / "out", "'r': symlink to 'q/..' escapes the target")


def test_refuses_member_written_through_symlink(tmp_path: Path) -> None:
    archive = _craft(
        tmp_path / "a.tgz",
        (_info("sub", tarfile.DIRTYPE, mode=0o755), None),
        (_info("link", tarfile.SYMTYPE, linkname="sub"), None),
        _file("link/evil"),
    )
    _refuse(archive, tmp_path / "out", "'link/evil': it lies under the symlink 'link'")


@pytest.mark.parametrize("link_target", ["/etc/passwd", "../outside", "missing_earlier_member"])
def test_refuses_hardlink_escaping(tmp_path: Path, link_target: str) -> None:
    archive = _craft(
        tmp_path / "a.tgz", _file("ok"), (_info("evil", tarfile.LNKTYPE, linkname=link_target), None)
    )
    _refuse(archive, tmp_path / "out", "'evil': hardlink to")


@pytest.mark.parametrize("type_", [tarfile.CHRTYPE, tarfile.BLKTYPE])
def test_refuses_device_file(tmp_path: Path, type_: bytes) -> None:
    device = _info("null", type_, mode=0o666)
    device.devmajor, device.devminor = 1, 3
    archive = _craft(tmp_path / "a.tgz", _file("ok"), (device, None))
    _refuse(archive, tmp_path / "out", "'null': special file")


def test_refuses_fifo(tmp_path: Path) -> None:
    archive = _craft(tmp_path / "a.tgz", (_info("pipe", tarfile.FIFOTYPE), None))
    _refuse(archive, tmp_path / "out", "'pipe': special file")


def test_refuses_too_many_members(tmp_path: Path) -> None:
    archive = _craft(tmp_path / "a.tgz", *(_file(f"f{i}") for i in range(11)))
    _refuse(archive, tmp_path / "out", "more than 10 members .*'f10'", max_members=10)
    unpack(archive, tmp_path / "fine", max_members=11)
    assert len(list((tmp_path / "fine").iterdir())) == 11


def test_refuses_too_many_bytes_in_one_member(tmp_path: Path) -> None:
    archive = _craft(tmp_path / "a.tgz", _file("big", os.urandom(200_000)))
    _refuse(archive, tmp_path / "out", "'big'.*limit of 100000 bytes", max_bytes=100_000)


def test_refuses_too_many_bytes_across_members(tmp_path: Path) -> None:
    """Each member is under the limit; only the running total of the stream crosses it."""
    archive = _craft(tmp_path / "a.tgz", *(_file(f"f{i}", os.urandom(30_000)) for i in range(5)))
    _refuse(archive, tmp_path / "out", "limit of 100000 bytes", max_bytes=100_000)


def test_refuses_decompression_bomb(tmp_path: Path) -> None:
    archive = _craft(tmp_path / "a.tgz", _file("zeros", bytes(50 * 1024 * 1024)))
    assert archive.stat().st_size < 1024 * 1024
    _refuse(archive, tmp_path / "out", "decompression bomb.*'zeros'")


def test_refuses_oversized_extension_header(tmp_path: Path) -> None:
    """Hazard: tarfile reads a pax header's payload whole into memory, so its size must be bounded."""
    with tarfile.open(tmp_path / "a.tgz", "w:gz", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("f")
        info.pax_headers = {"comment": "x" * (2 * 1024 * 1024)}
        tar.addfile(info, io.BytesIO(b""))
    _refuse(tmp_path / "a.tgz", tmp_path / "out", "extended header of")


def test_refuses_corrupt_archive(tmp_path: Path) -> None:
    archive = tmp_path / "a.tgz"
    archive.write_bytes(b"not a gzip file at all")
    _refuse(archive, tmp_path / "out", "cannot unpack")


def test_refused_archive_leaves_existing_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "result.txt"
    target.write_text("previous content")
    archive = _craft(tmp_path / "a.tgz", _file("fine"), _file("../escape"))
    with pytest.raises(ArtifactError):
        unpack(archive, target)
    assert target.read_text() == "previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tgz", "result.txt"]


def test_refused_archive_leaves_partial_extraction_nowhere(tmp_path: Path) -> None:
    """Members before the offending one were extracted into staging; none of them may survive."""
    archive = _craft(
        tmp_path / "a.tgz", *(_file(f"good{i}") for i in range(5)), (_info("dev", tarfile.CHRTYPE), None)
    )
    _refuse(archive, tmp_path / "out", "'dev': special file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tgz"]


def test_byte_limit_is_measured_on_the_stream_not_declared_sizes(tmp_path: Path) -> None:
    """Hazard: trusting declared member sizes alone; here every member declares 0 bytes."""
    archive = _craft(tmp_path / "a.tgz", *(_file(f"f{i}", b"") for i in range(300)))
    _refuse(archive, tmp_path / "out", "expands beyond the limit of 100000 bytes", max_bytes=100_000)


def test_pack_refuses_archive_inside_the_packed_directory(tree: Path) -> None:
    """Hazard: the archive being written would be packed into itself."""
    with pytest.raises(ArtifactError, match="inside it"):
        pack(tree, tree / "a" / "self.tgz")
    assert not (tree / "a" / "self.tgz").exists()


def test_refuses_file_archive_with_extra_members(tmp_path: Path) -> None:
    with tarfile.open(
        tmp_path / "a.tgz", "w:gz", format=tarfile.PAX_FORMAT, pax_headers={"AIHUB.root": "file"}
    ) as tar:
        for name in ("one", "two"):
            tar.addfile(tarfile.TarInfo(name), io.BytesIO(b""))
    _refuse(tmp_path / "a.tgz", tmp_path / "out", "exactly one regular file")


@pytest.mark.parametrize("mode", [0o4755, 0o2775, 0o1777, 0o777, 0o644, 0o600, 0o700, 0o070, 0o000, 0o511])
def test_the_mode_rule_without_the_stdlib_filter_is_the_filters(
    mode: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python before 3.11.4 (Debian 12's system python3, the platform image's test base) has no
    ``tarfile.data_filter``: the fallback gives every regular file the mode the filter gives."""
    member = tarfile.TarInfo("f")
    member.mode = mode
    with_filter = _filtered_mode(member, tmp_path)
    monkeypatch.delattr(tarfile, "data_filter")
    assert _filtered_mode(member, tmp_path) == with_filter
