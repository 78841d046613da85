"""What ``aihub run`` loads: the embedded runner imports neither the API stack nor the migration tool.

Start-up is most of what a user waits for when running a small workflow (``aihub run`` of the seed's example
took 1.7–3 s, of which about 1 s was importing Strawberry, graphql-core, aerich and the HTTP clients it never
used; ``docs/benchmarks.md``, "CLI start-up"). This keeps those imports from creeping back; the time itself is
measured by ``bench/startup.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from aihub.db.setup import migration_files

#: packages ``aihub run`` has no use for (the server's API and pages, the client, migrations when up to date,
#: PostgreSQL's driver, module READMEs' Markdown)
NOT_FOR_RUN = (
    "strawberry",
    "graphql",
    "aerich",
    "httpx",
    "websockets",
    "uvicorn",
    "jinja2",
    "starlette",
    "asyncpg",
    "markdown_it",
)

PROBE = """
import asyncio, json, sys
from pathlib import Path
import aihub.cli.runner, aihub.runtime
from aihub.db.setup import migrate
from aihub.settings import Settings

loaded = {name: name in sys.modules for name in NOT_FOR_RUN}
applied = asyncio.run(migrate(Settings(data_dir=Path(sys.argv[1]))))
print(json.dumps({"loaded": loaded, "applied": applied, "aerich_after": "aerich" in sys.modules}))
"""


def _probe(data_dir: Path) -> dict:
    code = f"NOT_FOR_RUN = {NOT_FOR_RUN!r}\n" + PROBE
    result = subprocess.run(
        [sys.executable, "-c", code, str(data_dir)], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_runner_imports_no_api_client_or_migration_tool(tmp_path: Path) -> None:
    first = _probe(tmp_path)  # a new database: aerich is needed and used
    assert first["loaded"] == dict.fromkeys(NOT_FOR_RUN, False), first["loaded"]
    assert sorted(first["applied"]) == sorted(migration_files())
    assert first["aerich_after"] is True

    again = _probe(tmp_path)  # up to date: one query, no aerich
    assert again["applied"] == []
    assert again["aerich_after"] is False


#: ``aihub run FILE`` itself, in-process on the embedded defaults, then what it had loaded
RUN_PROBE = """
import json, sys
from aihub.cli import main
code = main(["run", sys.argv[1]])
print(json.dumps({"code": code, "loaded": sorted(name for name in NOT_FOR_RUN if name in sys.modules)}))
"""


def test_a_run_on_the_embedded_defaults_loads_none_of_them(tmp_path: Path) -> None:
    """The whole of ``aihub run FILE`` — the choice between a server and running in-process, the run, its end —
    not only its imports: a helper reached on the way (the saved login's URL once brought in the HTTP and
    WebSocket clients, a fifth of a small workflow's run) is caught here."""
    spec = tmp_path / "wf.yaml"
    spec.write_text(yaml.safe_dump({"name": "probe", "nodes": [{"name": "a", "command": "echo hello"}]}))
    env = {name: value for name, value in os.environ.items() if not name.startswith("AIHUB_")}
    env |= {"AIHUB_DATA_DIR": str(tmp_path / "data"), "AIHUB_CONFIG_DIR": str(tmp_path / "config")}
    code = f"NOT_FOR_RUN = {NOT_FOR_RUN!r}\n" + RUN_PROBE
    for loaded in (["aerich"], []):  # (the first run makes the database)
        result = subprocess.run(
            [sys.executable, "-c", code, str(spec)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd="/",
        )
        assert result.returncode == 0, result.stderr
        *out, last = result.stdout.strip().splitlines()
        assert "a | hello" in out, result.stdout
        assert json.loads(last) == {"code": 0, "loaded": loaded}, result.stderr


def test_the_set_up_byte_compiles_what_a_run_imports() -> None:
    """``make run`` and ``make test`` byte-compile the package: where Python is told not to write bytecode
    (``PYTHONDONTWRITEBYTECODE``: some hosts, many images) every ``aihub`` process would otherwise compile each
    of our modules again, a quarter of a small workflow's ``aihub run`` (docs/benchmarks.md, "CLI start-up")."""
    package = Path(__file__).resolve().parents[1] / "aihub"
    result = subprocess.run(
        [sys.executable, "-v", "-c", "import aihub.cli, aihub.cli.runner, aihub.runtime"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        check=True,
    )
    lines = result.stderr.splitlines()
    compiled = [line for line in lines if line.startswith(f"# code object from {package}/")]
    assert len([line for line in lines if f"{package}/" in line and "matches" in line]) > 50
    assert compiled == [], (
        "compiled from source at each start (the set-up runs `python -m compileall -q aihub`):\n"
        + "\n".join(compiled)
    )
