"""Tortoise models for every entity of the product (SPEC.md §1).

Only ``aihub.services`` (and the engine through services) writes these. Statuses are stored as the enum
values of ``aihub.domain.status``; JSON columns hold spec/params/handles as plain objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from tortoise import fields
from tortoise.indexes import Index
from tortoise.models import Model as _TortoiseModel
from tortoise.models import ModelMeta

from aihub.domain.status import BuildStatus, ModuleStatus, NodeStatus, ReviewStatus, RunStatus
from aihub.domain.tokens import TokenKind

# re-exported: they live in aihub.domain
__all__ = ["BuildStatus", "ModuleStatus", "ReviewStatus", "TokenKind"]

# ``Index(fields=...)`` takes column names as they are: a foreign key ``owner`` is the column ``owner_id``.


class _Meta(ModelMeta):
    """Tortoise's, without reading each model's source for ``#:`` field comments (``inspect.getsource`` parses
    this whole file once per model: about 0.1 s of every start-up, a tenth of ``aihub run``'s). A model gives
    its field comments as ``_comments = {field: text}`` instead; they become the field's docstring and
    description (and the column's comment) exactly as a ``#:`` comment did."""

    def __new__(mcs, name: str, bases: tuple[type, ...], attrs: dict[str, Any]) -> Any:
        comments: dict[str, str] = attrs.pop("_comments", {})
        attrs.setdefault("_no_comments", True)
        cls = super().__new__(mcs, name, bases, attrs)
        for field_name, text in comments.items():
            field = cls._meta.fields_map[field_name]
            field.docstring = text
            if field.description is None:
                field.description = text.split("\n")[0]
        return cls


class Model(_TortoiseModel, metaclass=_Meta):
    class Meta:
        abstract = True


class SetIndex(Index):
    """An index of the rows whose first field is set (``WHERE <field> IS NOT NULL``; a plain field, whose column
    has its name): a row without it is never written to the index, and a query that compares that field
    (``field = ?``) can still use it. Tortoise's ``PartialIndex`` can only say ``field = value``."""

    def __init__(self, *, fields: Sequence[str], name: str | None = None) -> None:
        super().__init__(fields=tuple(fields), name=name)
        self.extra = f' WHERE "{fields[0]}" IS NOT NULL'


class Team(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=100, unique=True)
    peer_review = fields.BooleanField(default=False)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "team"


class User(Model):
    _comments: ClassVar[dict[str, str]] = {
        "is_team_leader": "leads the team they belong to (a team may have several leaders)",
        "language": 'the UI language the user chose in the header ("en", "zh_CN"); NULL: follow the browser',
    }
    id = fields.IntField(primary_key=True)
    username = fields.CharField(max_length=64, unique=True)
    display_name = fields.CharField(max_length=128, default="")
    password_hash = fields.CharField(max_length=255, default="")
    is_admin = fields.BooleanField(default=False)
    is_active = fields.BooleanField(default=True)
    is_team_leader = fields.BooleanField(default=False)
    language = fields.CharField(max_length=16, null=True)
    team: fields.ForeignKeyNullableRelation[Team] = fields.ForeignKeyField(
        "models.Team", related_name="members", null=True, on_delete=fields.SET_NULL
    )
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "user"


class ApiToken(Model):
    """Personal, session and run-scoped tokens; only the sha256 of the secret is stored."""

    id = fields.IntField(primary_key=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="tokens", on_delete=fields.CASCADE
    )
    name = fields.CharField(max_length=100, default="")
    kind = fields.CharEnumField(TokenKind, max_length=16)
    token_hash = fields.CharField(max_length=64, unique=True)
    run: fields.ForeignKeyNullableRelation[Run] = fields.ForeignKeyField(
        "models.Run", related_name="tokens", null=True, on_delete=fields.CASCADE
    )
    created_at = fields.DatetimeField(auto_now_add=True)
    expires_at = fields.DatetimeField(null=True)
    revoked_at = fields.DatetimeField(null=True)
    last_used_at = fields.DatetimeField(null=True)

    class Meta:
        table = "api_token"
        indexes = (Index(fields=("user_id", "kind")), Index(fields=("run_id",)))


class Category(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=64, unique=True)
    description = fields.TextField(default="")

    class Meta:
        table = "category"


class VirtualCluster(Model):
    """A pool of compute with a resource SKU; ``capacity`` is how many SKUs it can run at once."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=64, unique=True)
    description = fields.TextField(default="")
    gpu = fields.IntField(default=0)
    gpu_type = fields.CharField(max_length=64, default="")
    cpu_millis = fields.IntField(default=1000)
    memory_mib = fields.IntField(default=1024)
    capacity = fields.IntField(default=1)
    node_selector = fields.JSONField(default=dict)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "virtual_cluster"


class DataStorage(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=64, unique=True)
    description = fields.TextField(default="")
    path = fields.CharField(max_length=1024)
    host_path = fields.CharField(max_length=1024, default="", description="local executor source")
    volume = fields.JSONField(default=dict, description="Kubernetes volume source")
    read_only = fields.BooleanField(default=False)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "data_storage"


class Workflow(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=63)
    description = fields.TextField(default="")
    owner: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="workflows", on_delete=fields.CASCADE
    )
    shared_with_team = fields.BooleanField(default=False)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "workflow"
        unique_together = (("owner", "name"),)
        indexes = (Index(fields=("owner_id", "updated_at")),)


class WorkflowVersion(Model):
    """An immutable snapshot of a spec. ``pinned_builds`` maps module node names to module build ids."""

    id = fields.IntField(primary_key=True)
    workflow: fields.ForeignKeyRelation[Workflow] = fields.ForeignKeyField(
        "models.Workflow", related_name="versions", on_delete=fields.CASCADE
    )
    number = fields.IntField()
    spec = fields.JSONField()
    description = fields.TextField(default="")
    is_template = fields.BooleanField(default=False)
    pinned_builds = fields.JSONField(default=dict)
    created_by: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="versions_created", on_delete=fields.CASCADE
    )
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "workflow_version"
        unique_together = (("workflow", "number"),)


class Run(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=200)
    version: fields.ForeignKeyRelation[WorkflowVersion] = fields.ForeignKeyField(
        "models.WorkflowVersion", related_name="runs", on_delete=fields.CASCADE
    )
    workflow: fields.ForeignKeyRelation[Workflow] = fields.ForeignKeyField(
        "models.Workflow", related_name="runs", on_delete=fields.CASCADE
    )
    owner: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="runs", on_delete=fields.CASCADE
    )
    params = fields.JSONField(default=dict)
    status = fields.CharEnumField(RunStatus, max_length=16, default=RunStatus.PENDING)
    retry_count = fields.IntField(default=0)
    message = fields.TextField(default="")
    use_cache = fields.BooleanField(default=True)
    copied_from_id = fields.IntField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    started_at = fields.DatetimeField(null=True)
    finished_at = fields.DatetimeField(null=True)

    class Meta:
        table = "run"
        indexes = (
            Index(fields=("status", "created_at")),
            Index(fields=("owner_id", "created_at")),
            Index(fields=("workflow_id", "created_at")),
            Index(fields=("version_id", "created_at")),
        )


class NodeRun(Model):
    """One node inside a run. ``attempt`` is the current attempt number (0 = never started)."""

    id = fields.IntField(primary_key=True)
    run: fields.ForeignKeyRelation[Run] = fields.ForeignKeyField(
        "models.Run", related_name="nodes", on_delete=fields.CASCADE
    )
    name = fields.CharField(max_length=64)
    status = fields.CharEnumField(NodeStatus, max_length=16, default=NodeStatus.WAITING)
    attempt = fields.IntField(default=0)
    retry_count = fields.IntField(default=0)
    inputs = fields.JSONField(default=dict)
    outputs = fields.JSONField(default=dict)
    message = fields.TextField(default="")
    exit_code = fields.IntField(null=True)
    cache_key = fields.CharField(max_length=64, null=True)
    cache_source_id = fields.IntField(null=True)
    started_at = fields.DatetimeField(null=True)
    finished_at = fields.DatetimeField(null=True)
    auto_retries = fields.IntField(
        default=0,
        db_default=0,
        description="automatic retries used since the run (re)started; survives engine restarts",
    )

    class Meta:
        table = "node_run"
        unique_together = (("run", "name"),)
        # a node without a cache key (any but a module's) changes status without touching it: two fewer pages
        # in each of a node's transactions (docs/benchmarks.md, issue 18, round twelve)
        indexes = (SetIndex(fields=("cache_key", "status")),)


class CapacityClaim(Model):
    """A started node's share of a virtual cluster, counted across engine workers (``AIHUB_SHARED_CAPACITY``).

    Written by ``aihub.services.capacity`` when a node starts and deleted when it ends; one per node of a run.
    """

    id = fields.IntField(primary_key=True)
    cluster = fields.CharField(max_length=64)
    run: fields.ForeignKeyRelation[Run] = fields.ForeignKeyField(
        "models.Run", related_name="capacity_claims", on_delete=fields.CASCADE
    )
    node = fields.CharField(max_length=64)
    cpu_millis = fields.IntField()
    memory_mib = fields.IntField()
    gpu = fields.IntField(default=0)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "capacity_claim"
        unique_together = (("run", "node"),)
        indexes = (Index(fields=("cluster",)),)


class Attempt(Model):
    """One execution of a node; ``handle`` is the executor's JSON handle for re-attaching."""

    id = fields.IntField(primary_key=True)
    node_run: fields.ForeignKeyRelation[NodeRun] = fields.ForeignKeyField(
        "models.NodeRun", related_name="attempts", on_delete=fields.CASCADE
    )
    number = fields.IntField()
    status = fields.CharEnumField(NodeStatus, max_length=16, default=NodeStatus.RUNNING)
    executor = fields.CharField(max_length=32, default="local")
    handle = fields.JSONField(default=dict)
    exit_code = fields.IntField(null=True)
    message = fields.TextField(default="")
    started_at = fields.DatetimeField(null=True)
    finished_at = fields.DatetimeField(null=True)

    class Meta:
        table = "attempt"
        unique_together = (("node_run", "number"),)


class NodeEvent(Model):
    """Engine events of a run (scheduled, started, exited, retried, output stored, stopped)."""

    id = fields.BigIntField(primary_key=True)
    run: fields.ForeignKeyRelation[Run] = fields.ForeignKeyField(
        "models.Run", related_name="events", on_delete=fields.CASCADE
    )
    node = fields.CharField(max_length=64, null=True)
    attempt = fields.IntField(null=True)
    kind = fields.CharField(max_length=32)
    message = fields.TextField(default="")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "node_event"
        indexes = (Index(fields=("run_id", "node")),)


class Module(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=63, unique=True)
    category: fields.ForeignKeyRelation[Category] = fields.ForeignKeyField(
        "models.Category", related_name="modules", on_delete=fields.RESTRICT
    )
    description = fields.TextField(default="")
    owner: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="modules", on_delete=fields.CASCADE
    )
    git_url = fields.CharField(max_length=1024)
    ref = fields.CharField(max_length=255, default="main")
    dockerfile_path = fields.CharField(max_length=1024, default="Dockerfile")
    build_context = fields.CharField(max_length=1024, default=".")
    readme_path = fields.CharField(max_length=1024, default="README.md")
    env = fields.JSONField(default=dict)
    inputs = fields.JSONField(default=list)
    outputs = fields.JSONField(default=list)
    status = fields.CharEnumField(ModuleStatus, max_length=16, default=ModuleStatus.BUILDING)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "module"
        indexes = (Index(fields=("status", "owner_id")),)


class ModuleBuild(Model):
    """One build of a module: the snapshot a workflow version pins."""

    id = fields.IntField(primary_key=True)
    module: fields.ForeignKeyRelation[Module] = fields.ForeignKeyField(
        "models.Module", related_name="builds", on_delete=fields.CASCADE
    )
    number = fields.IntField()
    status = fields.CharEnumField(BuildStatus, max_length=16, default=BuildStatus.BUILDING)
    commit_sha = fields.CharField(max_length=64, default="")
    image = fields.CharField(max_length=512, default="")
    entrypoint = fields.JSONField(default=list)
    workdir = fields.CharField(max_length=1024, default="")
    context_path = fields.CharField(max_length=1024, default="")
    readme = fields.TextField(default="")
    snapshot = fields.JSONField(default=dict)
    message = fields.TextField(default="")
    published = fields.BooleanField(default=False)
    created_at = fields.DatetimeField(auto_now_add=True)
    finished_at = fields.DatetimeField(null=True)

    class Meta:
        table = "module_build"
        unique_together = (("module", "number"),)


class ModuleReview(Model):
    id = fields.IntField(primary_key=True)
    module: fields.ForeignKeyRelation[Module] = fields.ForeignKeyField(
        "models.Module", related_name="reviews", on_delete=fields.CASCADE
    )
    build: fields.ForeignKeyRelation[ModuleBuild] = fields.ForeignKeyField(
        "models.ModuleBuild", related_name="reviews", on_delete=fields.CASCADE
    )
    requester: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="review_requests", on_delete=fields.CASCADE
    )
    reviewer: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="reviews_done", null=True, on_delete=fields.SET_NULL
    )
    status = fields.CharEnumField(ReviewStatus, max_length=16, default=ReviewStatus.PENDING)
    reason = fields.TextField(default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    decided_at = fields.DatetimeField(null=True)

    class Meta:
        table = "module_review"
        indexes = (Index(fields=("status", "created_at")),)
