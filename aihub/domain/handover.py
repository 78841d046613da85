"""A new run's parsed spec, handed from ``create_run`` to the engine when both are in one process.

``create_run`` parses the version's spec to check the run's parameters and name the node rows; the engine then
loads the run and would parse the same spec again (about 25 ms for 1,000 nodes, on the path to the first node's
start). Versions never change, so the parse is left here under the run (:data:`RunKey`), and the engine takes
it (:meth:`SpecHandover.take` removes it: nothing keeps a spec alive past the engine's load). Only while an
engine runs in this process (:meth:`SpecHandover.open`): an API process without one keeps nothing. One whose
run an engine elsewhere takes (engine workers) stays until pushed out: at most ``limit`` are kept, the oldest
dropped first. A run is known by its id, its version and its creation time: ids are not reused within a
database, and the time tells a run of another database with the same ids apart (tests open many in one process).
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime

from aihub.domain.spec import WorkflowSpec

#: a run: its id, its version's id and its ``created_at``
RunKey = tuple[int, int, datetime]


class SpecHandover:
    """Parsed specs of new runs, by run id, at most ``limit`` of them."""

    def __init__(self, limit: int = 16) -> None:
        self.limit = limit
        self._specs: OrderedDict[int, tuple[RunKey, WorkflowSpec]] = OrderedDict()
        self._engines = 0  # engines of this process that may take them

    def open(self) -> None:
        """An engine of this process starts: specs are kept for it from now on."""
        self._engines += 1

    def close(self) -> None:
        """An engine of this process stops; with none left, nothing is kept."""
        self._engines = max(self._engines - 1, 0)
        if not self._engines:
            self._specs.clear()

    def give(self, run: RunKey, spec: WorkflowSpec) -> None:
        if not self._engines:
            return
        self._specs[run[0]] = (run, spec)
        while len(self._specs) > self.limit:
            self._specs.popitem(last=False)

    def take(self, run: RunKey) -> WorkflowSpec | None:
        """The spec given for ``run``, if it was given for this very run; either way nothing is kept for its id."""
        given = self._specs.pop(run[0], None)
        return given[1] if given is not None and given[0] == run else None

    def __len__(self) -> int:
        return len(self._specs)


#: the process's handover (``create_run`` gives, ``load_run_state`` takes)
HANDOVER = SpecHandover()
