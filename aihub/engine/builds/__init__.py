"""Module builds: from a git repository to something the executors can run (SPEC.md §5).

- ``git.py`` — URL/ref checks and the shallow, bounded clone;
- ``dockerfile.py`` — the module contract (exec-form ENTRYPOINT, no CMD) and what the final stage copies;
- ``local.py`` — the local backend: the Dockerfile's copies replayed onto a kept directory of this host;
- ``kubernetes.py`` — the Kaniko build Job that pushes ``<registry>/<category>/<name>:<sha>``;
- ``kubernetes_backend.py`` — the Kubernetes backend (``executor = "kubernetes"``): runs and follows that Job;
- ``kubernetes_logs.py`` — that Job's pod's logs streamed into the build log;
- ``backend.py`` — what a backend is (:class:`BuildBackend`, :class:`BuiltImage`);
- ``manager.py`` — builds as background jobs with logs; results recorded through a store (the services).
"""

from aihub.engine.builds.manager import BuildJob, BuildManager, BuildOutcome, BuildStore

__all__ = ["BuildJob", "BuildManager", "BuildOutcome", "BuildStore"]
