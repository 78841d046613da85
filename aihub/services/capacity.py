"""The shared capacity ledger: virtual-cluster capacity counted in the database, across engine workers.

With several engine workers (``AIHUB_SHARED_CAPACITY``, on with the Kafka bus) each worker's in-memory pools
only see its own nodes. Before a node starts, its worker claims the node's resources here; the claim is granted
when the claims of the cluster leave room for it, and deleted when the node ends. Claims of one cluster are
serialised across processes: a PostgreSQL advisory lock per cluster for the transaction, on SQLite the database
write lock (taken first, since a deferred transaction's read-then-insert can interleave with another's).

A worker that dies between a node's end and its release leaves a stale claim; ``sweep`` drops claims whose node
is no longer WAITING or RUNNING in an active run, and runs before a refusal is final. A node that is WAITING
keeps its claim: it is being started (or its run is being taken over, and the new owner's claim of the same
node is granted again).
"""

from __future__ import annotations

from tortoise import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from aihub.db.models import CapacityClaim, NodeRun, Run
from aihub.db.retry import retried
from aihub.domain.resources import Resources
from aihub.domain.status import NodeStatus, RunStatus

#: first key of the two-key advisory locks (``pg_advisory_xact_lock(int4, int4)``), so they never collide
#: with single-key locks such as the migration lock
_PG_LOCK_SPACE = 0x41494843

_LIVE_NODE = (NodeStatus.WAITING, NodeStatus.RUNNING)


@retried("capacity claim")  # each is idempotent: a claim held is granted again
async def try_claim(cluster: str, total: Resources, req: Resources, run_id: int, node: str) -> bool:
    """Claim ``req`` of ``cluster`` (of size ``total``) for a node; False when other claims leave no room.

    A node that holds a claim already is granted again (a run taken over by another worker)."""
    async with in_transaction() as conn:
        await _lock_cluster(conn, cluster)
        held, used = await _claims(conn, cluster, run_id, node)
        if held:
            return True
        if not _fits(used, total, req):
            await _sweep(conn, cluster)
            _, used = await _claims(conn, cluster, run_id, node)
            if not _fits(used, total, req):
                return False
        await _insert(conn, cluster, req, run_id, node)
        return True


@retried("capacity claim")
async def record_claim(cluster: str, req: Resources, run_id: int, node: str) -> None:
    """Claim for a node that runs already (re-attached after a restart or a takeover), whether or not it fits."""
    async with in_transaction() as conn:
        await _lock_cluster(conn, cluster)
        if not await CapacityClaim.filter(run_id=run_id, node=node).using_db(conn).exists():
            await _insert(conn, cluster, req, run_id, node)


@retried("capacity release")
async def release(run_id: int, node: str) -> None:
    """The node ended: its share of the cluster is free again (nothing happens when it holds none)."""
    await CapacityClaim.filter(run_id=run_id, node=node).delete()


@retried("capacity sweep")
async def sweep(cluster: str) -> int:
    """Delete the cluster's stale claims (their node ended or their run finished); returns how many."""
    async with in_transaction() as conn:
        await _lock_cluster(conn, cluster)
        return await _sweep(conn, cluster)


async def _lock_cluster(conn: BaseDBAsyncClient, cluster: str) -> None:
    """Serialise the claims of one cluster until the transaction ends."""
    if conn.capabilities.dialect == "postgres":
        await conn.execute_query("SELECT pg_advisory_xact_lock($1, hashtext($2))", [_PG_LOCK_SPACE, cluster])
    else:  # SQLite: a write (that changes nothing) takes the database's write lock now, not at the insert
        await conn.execute_query('UPDATE "capacity_claim" SET "cluster" = "cluster" WHERE 0 = 1')


async def _claims(conn: BaseDBAsyncClient, cluster: str, run_id: int, node: str) -> tuple[bool, Resources]:
    """Whether the node holds a claim of the cluster already, and what the cluster's claims add up to (one
    query: this runs on every node start)."""
    rows = (
        await CapacityClaim.filter(cluster=cluster)
        .using_db(conn)
        .values_list("run_id", "node", "cpu_millis", "memory_mib", "gpu")
    )
    held = any(r[0] == run_id and r[1] == node for r in rows)
    used = Resources(
        cpu_millis=sum(r[2] for r in rows), memory_mib=sum(r[3] for r in rows), gpu=sum(r[4] for r in rows)
    )
    return held, used


def _fits(used: Resources, total: Resources, req: Resources) -> bool:
    return (
        used.cpu_millis + req.cpu_millis <= total.cpu_millis
        and used.memory_mib + req.memory_mib <= total.memory_mib
        and used.gpu + req.gpu <= total.gpu
    )


async def _insert(conn: BaseDBAsyncClient, cluster: str, req: Resources, run_id: int, node: str) -> None:
    await CapacityClaim.create(
        using_db=conn,
        cluster=cluster,
        run_id=run_id,
        node=node,
        cpu_millis=req.cpu_millis,
        memory_mib=req.memory_mib,
        gpu=req.gpu,
    )


async def _sweep(conn: BaseDBAsyncClient, cluster: str) -> int:
    claims = await CapacityClaim.filter(cluster=cluster).using_db(conn).values_list("id", "run_id", "node")
    if not claims:
        return 0
    run_ids = list({run_id for _, run_id, _ in claims})
    active_runs = set(
        await Run.filter(id__in=run_ids)
        .using_db(conn)
        .exclude(status__in=[s for s in RunStatus if s.is_terminal])
        .values_list("id", flat=True)
    )
    live = set(
        await NodeRun.filter(
            run_id__in=run_ids, name__in=list({n for _, _, n in claims}), status__in=_LIVE_NODE
        )
        .using_db(conn)
        .values_list("run_id", "name")
    )
    stale = [cid for cid, run_id, node in claims if run_id not in active_runs or (run_id, node) not in live]
    if stale:
        await CapacityClaim.filter(id__in=stale).using_db(conn).delete()
    return len(stale)
