"""The Dockerfile contract (exec-form ENTRYPOINT, no CMD) and what the local backend reads from it."""

from __future__ import annotations

import pytest

from aihub.engine.builds.dockerfile import CopyStep, DockerfileError, parse_dockerfile

SEED_EXAMPLE = """\
FROM 192.168.99.199:8080/aied/python:3.9-slim
# 设置工作目录
WORKDIR /app
# 拷贝当前目录内容到容器中
COPY . /app
# 设置启动命令（main.py支持参数注入）
ENTRYPOINT ["python", "main.py"]
"""


def test_the_seed_example() -> None:
    info = parse_dockerfile(SEED_EXAMPLE)
    assert info.entrypoint == ("python", "main.py")
    assert info.workdir == "/app"
    assert info.copies == (CopyStep(line=5, sources=(".",), dest="/app"),)
    assert info.notes == ()


def test_continuations_comments_flags_and_relative_paths() -> None:
    info = parse_dockerfile(
        "# syntax=docker/dockerfile:1\n"
        "ARG BASE=python:3.11\n"
        "FROM --platform=linux/amd64 ${BASE}\n"
        "workdir /srv\n"
        "WORKDIR app\n"
        "COPY --chown=1000:1000 --chmod=755 src/ lib/\n"
        'COPY ["a b.txt", "c.txt", "data/"]\n'
        "RUN pip install \\\n"
        "    # a comment inside a continuation\n"
        "    numpy\n"
        'ENTRYPOINT ["python3", \\\n'
        '            "/srv/app/lib/main.py"]\n'
    )
    assert info.workdir == "/srv/app"
    assert info.copies == (
        CopyStep(line=6, sources=("src/",), dest="/srv/app/lib/"),
        CopyStep(line=7, sources=("a b.txt", "c.txt"), dest="/srv/app/data/"),
    )
    assert info.entrypoint == ("python3", "/srv/app/lib/main.py")
    assert info.notes == ("line 8: RUN steps are not executed by the local backend",)


def test_the_escape_directive() -> None:
    info = parse_dockerfile('# escape=`\nFROM x\nENTRYPOINT ["a", `\n "b"]\n')
    assert info.entrypoint == ("a", "b")


def test_the_final_stage_counts_and_inherits_from_a_named_stage() -> None:
    info = parse_dockerfile(
        "FROM python:3.11 AS base\n"
        "WORKDIR /code\n"
        "COPY . .\n"
        'ENTRYPOINT ["python3", "run.py"]\n'
        "FROM base AS final\n"
        "COPY --from=builder /wheels /wheels\n"
        "ADD https://example.com/model.bin /models/\n"
    )
    assert info.entrypoint == ("python3", "run.py")
    assert info.workdir == "/code"
    assert info.copies == (CopyStep(line=3, sources=(".",), dest="/code"),)
    assert info.notes == (
        "line 6: COPY --from copies from another image or stage; skipped locally",
        "line 7: ADD of a URL is not fetched locally; skipped",
    )


def test_a_new_unrelated_stage_starts_empty() -> None:
    with pytest.raises(DockerfileError, match="has no ENTRYPOINT"):
        parse_dockerfile('FROM a AS one\nENTRYPOINT ["x"]\nFROM b\nWORKDIR /w\n')


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'FROM x\nCMD ["python3", "main.py"]\n',
            "line 2: CMD is not allowed in a module's Dockerfile; put the whole start command in ENTRYPOINT",
        ),
        ('FROM x AS build\nCMD ["make"]\nFROM y\nENTRYPOINT ["a"]\n', "line 2: CMD is not allowed"),
        ("FROM x\nENTRYPOINT python3 main.py\n", "line 2: ENTRYPOINT must use the exec form (a JSON array)"),
        ("FROM x\nENTRYPOINT ['python3', 'main.py']\n", "is not a valid JSON array"),
        ("FROM x\nENTRYPOINT []\n", "must be a non-empty JSON array of strings"),
        ('FROM x\nENTRYPOINT ["python3", 1]\n', "must be a non-empty JSON array of strings"),
        ('FROM x\nENTRYPOINT {"a": 1}\n', "must use the exec form"),
        ("FROM x\nWORKDIR /app\n", "the Dockerfile has no ENTRYPOINT"),
        ("", "the Dockerfile has no FROM instruction"),
        ('ENTRYPOINT ["a"]\nFROM x\n', "line 1: the Dockerfile must start with FROM"),
        ('FROM x\nCOPY /app\nENTRYPOINT ["a"]\n', "line 2: COPY needs at least one source and a destination"),
        ('FROM x\nCOPY ["a", 1]\nENTRYPOINT ["a"]\n', "line 2: COPY needs a JSON array of strings"),
        ('FROM x\nCOPY ["a" "b"]\nENTRYPOINT ["a"]\n', "is not a valid JSON array"),
    ],
)
def test_contract_violations_say_what_to_change(text: str, message: str) -> None:
    with pytest.raises(DockerfileError) as err:
        parse_dockerfile(text)
    assert message in str(err.value)


def test_heredocs_and_variables_are_noted() -> None:
    info = parse_dockerfile('FROM x\nWORKDIR $HOME\nCOPY <<EOF /a.txt\nCOPY $SRC /dst\nENTRYPOINT ["a"]\n')
    assert info.notes == (
        "line 2: variables in WORKDIR are not expanded locally",
        "line 3: COPY heredocs are not supported locally; skipped",
        "line 4: variables in COPY are not expanded locally",
    )
