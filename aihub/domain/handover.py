"""A new run's parsed spec, handed from ``create_run`` to the engine when both are in one process.

``create_run`` parses the version's spec to check the run's parameters and name the node rows; the engine then
loads the run and would parse the same spec again (about 25 ms for 1,000 nodes, on the path to the first node's
start). Versions never change, so the parse is left here under the run's id and version, and the engine takes
it (:meth:`SpecHandover.take` removes it: nothing keeps a spec alive past the engine's load). Only while an
engine runs in this process (:meth:`SpecHandover.open`): an API process without one keeps nothing. One whose
run an engine elsewhere takes (engine workers) stays until pushed out: at most ``limit`` are kept, the oldest
dropped first. Run ids are never reused (autoincrement), and the version is checked as well.
"""

from __future__ import annotations

from collections import OrderedDict

from aihub.domain.spec import WorkflowSpec


class SpecHandover:
    """Parsed specs of new runs, by run id, at most ``limit`` of them."""

    def __init__(self, limit: int = 16) -> None:
        self.limit = limit
        self._specs: OrderedDict[int, tuple[int, WorkflowSpec]] = OrderedDict()
        self._engines = 0  # engines of this process that may take them

    def open(self) -> None:
        """An engine of this process starts: specs are kept for it from now on."""
        self._engines += 1

    def close(self) -> None:
        """An engine of this process stops; with none left, nothing is kept."""
        self._engines = max(self._engines - 1, 0)
        if not self._engines:
            self._specs.clear()

    def give(self, run_id: int, version_id: int, spec: WorkflowSpec) -> None:
        if not self._engines:
            return
        self._specs[run_id] = (version_id, spec)
        while len(self._specs) > self.limit:
            self._specs.popitem(last=False)

    def take(self, run_id: int, version_id: int) -> WorkflowSpec | None:
        """The spec given for ``run_id``, if it was of ``version_id``; either way nothing is kept for it."""
        given = self._specs.pop(run_id, None)
        return given[1] if given is not None and given[0] == version_id else None

    def __len__(self) -> int:
        return len(self._specs)


#: the process's handover (``create_run`` gives, ``load_run_state`` takes)
HANDOVER = SpecHandover()
