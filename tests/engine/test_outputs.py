"""Collecting text and path outputs (aihub.engine.outputs), independent of any executor."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from aihub.engine.artifacts import pack, sha256_file, unpack
from aihub.engine.executors.base import OutputDecl, OutputValue
from aihub.engine.outputs import collect_outputs
from aihub.storage.local import LocalArtifactStore


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


@pytest.fixture
def node_fs(tmp_path: Path) -> Path:
    """Stands for the node's filesystem: node path /x is host path node_fs/x."""
    root = tmp_path / "node"
    root.mkdir()
    return root


def _resolver(root: Path) -> Callable[[str], Path]:
    return lambda node_path: root / node_path.lstrip("/")


async def _collect(
    decls: list[OutputDecl], root: Path, store: LocalArtifactStore, max_text: int = 1000
) -> tuple[dict[str, OutputValue], str | None]:
    return await collect_outputs(decls, _resolver(root), store, max_text, tmp_dir=root.parent)


@pytest.mark.parametrize(
    ("content", "value"),
    [
        ("hello\n", "hello"),
        ("hello", "hello"),
        ("hello\n\n", "hello\n"),
        ("\n", ""),
        ("", ""),
        ("two\nlines\n", "two\nlines"),
    ],
)
async def test_text_output_strips_exactly_one_trailing_newline(
    node_fs: Path, store: LocalArtifactStore, content: str, value: str
) -> None:
    (node_fs / "out.txt").write_text(content)
    outputs, error = await _collect([OutputDecl("greeting", "/out.txt", "text")], node_fs, store)
    assert error is None
    assert outputs["greeting"].value == value
    assert outputs["greeting"].type == "text"
    assert outputs["greeting"].digest is None


async def test_text_output_just_under_the_limit_is_accepted(node_fs: Path, store: LocalArtifactStore) -> None:
    (node_fs / "out.txt").write_text("x" * 999 + "\n")
    outputs, error = await _collect([OutputDecl("x", "/out.txt", "text")], node_fs, store)
    assert error is None
    assert len(outputs["x"].value) == 999


async def test_text_output_at_the_limit_fails_with_its_size(node_fs: Path, store: LocalArtifactStore) -> None:
    (node_fs / "out.txt").write_text("é" * 1234 + "\n")  # characters, not bytes, are counted
    outputs, error = await _collect([OutputDecl("big", "/out.txt", "text")], node_fs, store)
    assert outputs == {}
    assert error == (
        "output 'big' is 1234 characters; text outputs must be under 1000 — use type: path for larger values"
    )
    (node_fs / "out.txt").write_text("x" * 1000)
    _, error = await _collect([OutputDecl("big", "/out.txt", "text")], node_fs, store)
    assert error is not None and "is 1000 characters" in error


async def test_huge_text_output_is_not_read_whole(node_fs: Path, store: LocalArtifactStore) -> None:
    with open(node_fs / "out.txt", "wb") as f:
        f.truncate(5 * 1024 * 1024)
    _, error = await _collect([OutputDecl("huge", "/out.txt", "text")], node_fs, store)
    assert error is not None
    assert error.startswith(f"output 'huge' is {5 * 1024 * 1024} bytes; text outputs must be under 1000")


async def test_max_text_is_configurable(node_fs: Path, store: LocalArtifactStore) -> None:
    (node_fs / "out.txt").write_text("abcdef")
    _, error = await _collect([OutputDecl("x", "/out.txt", "text")], node_fs, store, max_text=5)
    assert error is not None and "must be under 5 " in error


async def test_missing_text_output_fails(node_fs: Path, store: LocalArtifactStore) -> None:
    outputs, error = await _collect([OutputDecl("x", "/tmp/y", "text")], node_fs, store)
    assert (outputs, error) == ({}, "output 'x': file /tmp/y was not written")


async def test_directory_as_text_output_fails(node_fs: Path, store: LocalArtifactStore) -> None:
    (node_fs / "dir").mkdir()
    _, error = await _collect([OutputDecl("x", "/dir", "text")], node_fs, store)
    assert error == "output 'x': /dir is not a regular file"


async def test_missing_path_output_fails(node_fs: Path, store: LocalArtifactStore) -> None:
    outputs, error = await _collect([OutputDecl("x", "/tmp/y", "path")], node_fs, store)
    assert (outputs, error) == ({}, "output 'x': path /tmp/y does not exist")


async def test_path_output_directory_is_stored_content_addressed(
    tmp_path: Path, node_fs: Path, store: LocalArtifactStore
) -> None:
    out = node_fs / "tmp" / "model"
    (out / "sub").mkdir(parents=True)
    (out / "weights.bin").write_bytes(b"\x00\x01" * 1000)
    (out / "sub" / "config.json").write_text("{}")
    outputs, error = await _collect([OutputDecl("model", "/tmp/model", "path")], node_fs, store)
    assert error is None
    value = outputs["model"]
    assert (value.type, value.value) == ("path", "/tmp/model")
    stored = store.path(value.digest or "")
    assert sha256_file(stored) == value.digest
    assert stored.stat().st_size == value.size
    # Unpacking and packing again gives the very same archive: the digest describes the content.
    unpack(stored, tmp_path / "restored")
    assert (tmp_path / "restored" / "sub" / "config.json").read_text() == "{}"
    pack(tmp_path / "restored", tmp_path / "repacked.tar.gz")
    assert sha256_file(tmp_path / "repacked.tar.gz") == value.digest
    assert not list(tmp_path.glob(".output-*")), "temporary archives are cleaned up"


async def test_path_output_file(tmp_path: Path, node_fs: Path, store: LocalArtifactStore) -> None:
    (node_fs / "result.csv").write_text("a,b\n1,2\n")
    outputs, error = await _collect([OutputDecl("csv", "/result.csv", "path")], node_fs, store)
    assert error is None
    unpack(store.path(outputs["csv"].digest or ""), tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_text() == "a,b\n1,2\n"


async def test_collection_is_all_or_nothing_and_reports_the_first_error(
    node_fs: Path, store: LocalArtifactStore
) -> None:
    (node_fs / "ok.txt").write_text("fine")
    decls = [
        OutputDecl("ok", "/ok.txt", "text"),
        OutputDecl("first", "/missing1", "path"),
        OutputDecl("second", "/missing2", "text"),
    ]
    outputs, error = await _collect(decls, node_fs, store)
    assert outputs == {}
    assert error == "output 'first': path /missing1 does not exist"


async def test_resolve_errors_name_the_output(node_fs: Path, store: LocalArtifactStore) -> None:
    def refuse(node_path: str) -> Path:
        raise ValueError(f"{node_path!r} is not an absolute path")

    _, error = await collect_outputs([OutputDecl("x", "rel", "text")], refuse, store, 1000)
    assert error == "output 'x': 'rel' is not an absolute path"
