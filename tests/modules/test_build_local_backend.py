"""The local build backend: replaying a Dockerfile's copies onto a directory and mapping the entrypoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aihub.engine.builds.dockerfile import parse_dockerfile
from aihub.engine.builds.local import BuildFailure, LocalBuildBackend, inside, materialize


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "src" / "pkg").mkdir(parents=True)
    (ctx / "src" / "main.py").write_text("print('main')\n")
    (ctx / "src" / "pkg" / "util.py").write_text("X = 1\n")
    (ctx / "conf.yaml").write_text("a: 1\n")
    (ctx / "b.yaml").write_text("b: 2\n")
    (ctx / ".git").mkdir()
    (ctx / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return ctx


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_copy_dot_keeps_the_layout_without_git(context: Path, tmp_path: Path) -> None:
    info = parse_dockerfile('FROM x\nWORKDIR /app\nCOPY . /app\nENTRYPOINT ["python3", "src/main.py"]\n')
    image = materialize(info, context, tmp_path / "root")
    assert files(tmp_path / "root") == [
        "app/b.yaml",
        "app/conf.yaml",
        "app/src/main.py",
        "app/src/pkg/util.py",
    ]
    assert image.workdir == tmp_path / "root" / "app"
    assert image.entrypoint == ["python3", "src/main.py"]


def test_several_copies_files_into_directories_and_globs(context: Path, tmp_path: Path) -> None:
    info = parse_dockerfile(
        "FROM x\n"
        "WORKDIR /opt/m\n"
        "COPY src/ ./\n"
        "COPY *.yaml /etc/m/\n"
        "COPY conf.yaml /etc/m/renamed.yaml\n"
        "COPY src/main.py src/pkg /opt/other/\n"
        'ENTRYPOINT ["python3", "/opt/m/main.py", "--config=/etc/m/conf.yaml", "/not/copied"]\n'
    )
    root = tmp_path / "root"
    image = materialize(info, context, root)
    assert files(root) == [
        "etc/m/b.yaml",
        "etc/m/conf.yaml",
        "etc/m/renamed.yaml",
        "opt/m/main.py",
        "opt/m/pkg/util.py",
        "opt/other/main.py",
        "opt/other/util.py",
    ]
    assert image.workdir == root / "opt" / "m"
    assert image.entrypoint == [
        "python3",
        str(root / "opt" / "m" / "main.py"),
        "--config=/etc/m/conf.yaml",  # only whole-argument paths are mapped (documented)
        "/not/copied",
    ]


def test_a_missing_workdir_is_created(context: Path, tmp_path: Path) -> None:
    image = materialize(
        parse_dockerfile('FROM x\nWORKDIR /data/work\nENTRYPOINT ["a"]\n'), context, tmp_path / "r"
    )
    assert image.workdir.is_dir()


@pytest.mark.parametrize(
    ("copy", "message"),
    [
        (
            "COPY missing.txt /app/",
            "Dockerfile line 2: 'missing.txt' does not exist in the build context 'ctx'",
        ),
        ("COPY ../secret /app/", "Dockerfile line 2: '../secret' is outside the build context"),
        ("COPY src/../../secret /app/", "is outside the build context"),
        ("COPY link /app/", "Dockerfile line 2: 'link' points outside the build context"),
    ],
)
def test_copies_stay_inside_the_context(context: Path, tmp_path: Path, copy: str, message: str) -> None:
    (tmp_path / "secret").write_text("s3cret")
    os.symlink(tmp_path / "secret", context / "link")
    info = parse_dockerfile(f'FROM x\n{copy}\nENTRYPOINT ["a"]\n')
    with pytest.raises(BuildFailure) as err:
        materialize(info, context, tmp_path / "root")
    assert message in str(err.value)


def test_inside(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    os.symlink("/etc", tmp_path / "d" / "etc-link")
    assert inside(tmp_path, "d") == tmp_path / "d"
    assert inside(tmp_path, "/d/./x") == tmp_path / "d" / "x"
    assert inside(tmp_path, "../x") == tmp_path / "x"  # ".." cannot climb above the root (as in an image)
    assert inside(tmp_path, "d/etc-link") is None
    assert inside(tmp_path, "d/etc-link/passwd") is None


async def test_the_backend_replaces_an_interrupted_attempt_and_logs_notes(
    context: Path, tmp_path: Path
) -> None:
    backend = LocalBuildBackend(tmp_path / "builds")
    stale = backend.target("m", 7) / "stale.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("from an interrupted build")
    lines: list[str] = []
    info = parse_dockerfile(
        'FROM x\nRUN pip install numpy\nCOPY src /app\nENTRYPOINT ["python3", "/app/main.py"]\n'
    )
    image = await backend.build(module="m", build_id=7, info=info, context=context, log=lines.append)
    assert not stale.exists()
    assert image.root == tmp_path / "builds" / "m" / "7"
    assert lines[0] == "note: line 2: RUN steps are not executed by the local backend"
    assert lines[-1] == f"entrypoint: python3 {image.root}/app/main.py"
    bad = parse_dockerfile('FROM x\nCOPY nope /app\nENTRYPOINT ["a"]\n')
    with pytest.raises(BuildFailure):
        await backend.build(module="m", build_id=8, info=bad, context=context, log=lines.append)
    assert not backend.target("m", 8).exists()
