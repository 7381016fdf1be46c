"""Scripts' deployments in Prefect: the work pool, the run_script flow, deployments; the
Prefect Secret blocks that hold scripts' secret variables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from prefect import get_client
from prefect.blocks.system import Secret
from prefect.client.schemas.actions import (
    DeploymentScheduleCreate,
    DeploymentUpdate,
    WorkPoolCreate,
)
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from pydantic import SecretStr

from scriptflow_prefect.platform.prefect import call, flow_parameter_schema, shared_client
from scriptflow_prefect.platform.prefect_names import (
    ENTRYPOINT,
    FLOW_NAME,
    WORK_POOL,
)
from scriptflow_prefect.runs.worker import ScriptFlowWorker

SECRET_TYPE = Secret.get_block_type_slug()


async def ensure_work_pool() -> None:
    async with get_client() as client:
        try:
            await client.read_work_pool(WORK_POOL)
        except ObjectNotFound:
            try:
                await client.create_work_pool(
                    WorkPoolCreate(
                        name=WORK_POOL,
                        type=ScriptFlowWorker.type,
                        base_job_template=ScriptFlowWorker.get_default_base_job_template(),
                        description="ScriptFlow runs scripts here (in-process, one thread each).",
                    )
                )
            except PrefectHTTPStatusError as exc:  # created meanwhile by a worker
                if exc.response.status_code != 409:
                    raise


async def ensure_flow_id(client) -> UUID:
    return await client.create_flow_from_name(FLOW_NAME)


async def upsert_deployment(
    *,
    name: str,
    description: str,
    tags: list[str],
    parameters: dict[str, Any],
    schedules: list[DeploymentScheduleCreate] | None = None,
    paused: bool = False,
) -> UUID:
    """Create or update the deployment of one script; Prefect upserts on (flow, name)."""
    schema = flow_parameter_schema(ENTRYPOINT)  # read from the source: no import of flows/

    async def _do() -> UUID:
        async with get_client() as client:
            flow_id = await ensure_flow_id(client)
            return await client.create_deployment(
                flow_id=flow_id,
                name=name,
                description=description,
                tags=tags,
                parameters=parameters,
                parameter_openapi_schema=schema,
                work_pool_name=WORK_POOL,
                entrypoint=ENTRYPOINT,
                schedules=schedules or [],
                paused=paused,
                enforce_parameter_schema=False,
            )

    return await call(_do())


async def update_deployment(
    deployment_id: str | UUID,
    *,
    description: str,
    tags: list[str],
    parameters: dict[str, Any],
) -> None:
    """Bring an existing deployment back to what the overlay shows, in place: its schedules
    and its paused flag are left as they are (power users set those in Prefect)."""
    schema = flow_parameter_schema(ENTRYPOINT)
    update = DeploymentUpdate(
        description=description,
        tags=tags,
        parameters=parameters,
        parameter_openapi_schema=schema,
        work_pool_name=WORK_POOL,
        entrypoint=ENTRYPOINT,
        enforce_parameter_schema=False,
    )

    async def _do() -> None:
        async with get_client() as client:
            await client.update_deployment(UUID(str(deployment_id)), update)

    await call(_do())


async def delete_deployment(deployment_id: str | UUID) -> None:
    async def _do():
        async with get_client() as client:
            try:
                await client.delete_deployment(UUID(str(deployment_id)))
            except ObjectNotFound:
                pass

    await call(_do())


async def read_deployment(deployment_id: str | UUID):
    async def _do():
        async with get_client() as client:
            try:
                return await client.read_deployment(UUID(str(deployment_id)))
            except ObjectNotFound:
                return None

    return await call(_do())


async def save_secret(name: str, value: str) -> None:
    """Create or overwrite the Secret block `name`."""
    await call(Secret(value=SecretStr(value)).asave(name, overwrite=True))


async def read_secret(name: str) -> str | None:
    """The value of the Secret block `name`; None if there is none."""

    async def _do():
        async with get_client() as client:
            try:
                doc = await client.read_block_document_by_name(name, SECRET_TYPE)
            except ObjectNotFound:
                return None
            return _value_of(doc)

    return await call(_do())


async def secret_names(prefix: str) -> list[str]:
    """Names of the Secret blocks whose name starts with `prefix` (values not read)."""

    async def _do():
        async with get_client() as client:
            response = await client.request(
                "POST",
                "/block_documents/filter",
                json={
                    "block_documents": {"name": {"like_": prefix}},
                    "block_types": {"slug": {"any_": [SECRET_TYPE]}},
                    "include_secrets": False,
                },
            )
            response.raise_for_status()
            return [d["name"] for d in response.json() if d["name"].startswith(prefix)]

    return await call(_do())


async def delete_secret(name: str) -> None:
    async def _do():
        async with get_client() as client:
            try:
                doc = await client.read_block_document_by_name(
                    name, SECRET_TYPE, include_secrets=False
                )
                await client.delete_block_document(doc.id)
            except ObjectNotFound:
                pass

    await call(_do())


def read_secrets_sync(names: list[str]) -> dict[str, str | None]:
    """Values of these Secret blocks (None for one that does not exist), from a flow run's
    thread (a sync client: the flow is sync)."""
    found: dict[str, str | None] = {}
    with get_client(sync_client=True) as client:
        for name in names:
            try:
                found[name] = _value_of(client.read_block_document_by_name(name, SECRET_TYPE))
            except ObjectNotFound:
                found[name] = None
    return found


def _value_of(doc) -> str:
    # Not Secret.get(): it parses JSON, so a password "123" would come back as the number 123.
    value = doc.data.get("value")
    return value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)


# -- drift (scripts/drift.py): what Prefect holds of ScriptFlow's deployments ---------------
@dataclass(frozen=True)
class DeploymentFacts:
    """What drift.py compares of a deployment, read as plain JSON: parsing Prefect's full
    response models (each with the flow's parameter schema) cost ~2 ms a deployment."""

    id: str
    name: str
    flow_id: str
    tags: list[str]
    parameters: dict[str, Any]
    work_pool_name: str | None
    concurrency_limit: int | None
    concurrency_options: dict[str, Any] | None
    created: str

    @classmethod
    def of(cls, d: dict[str, Any]) -> DeploymentFacts:
        limit = d.get("global_concurrency_limit") or {}
        return cls(
            id=str(d["id"]),
            name=str(d["name"]),
            flow_id=str(d["flow_id"]),
            tags=list(d.get("tags") or []),
            parameters=dict(d.get("parameters") or {}),
            work_pool_name=d.get("work_pool_name"),
            concurrency_limit=limit.get("limit"),
            concurrency_options=d.get("concurrency_options"),
            created=str(d.get("created") or ""),
        )


async def read_script_deployments(ids: list[str]) -> list[DeploymentFacts]:
    """Every deployment that may be a script's, in one read of all deployments (a ScriptFlow
    Prefect holds the scripts' and a few more): those of the run_script flow, and these `ids`."""

    async def _do():
        client = await shared_client()
        r = await client.request(
            "POST",
            "/flows/filter",
            json={"flows": {"name": {"any_": [FLOW_NAME]}}},
        )
        r.raise_for_status()
        flows = {f["name"]: f["id"] for f in r.json()}
        found, offset, wanted = [], 0, set(ids)
        while True:
            r = await client.request(
                "POST", "/deployments/filter", json={"limit": 200, "offset": offset}
            )
            r.raise_for_status()
            page = r.json()
            found += [DeploymentFacts.of(d) for d in page]
            if len(page) < 200:
                break
            offset += 200
        # Only the run_script flow's deployments can be scripts' (orphans to delete, ones to
        # adopt): a power user's own flow tagged `scriptflow` is none of ScriptFlow's business.
        return [d for d in found if d.flow_id == flows.get(FLOW_NAME) or d.id in wanted]

    return await call(_do())


async def copy_concurrency_limit(deployment_id: str, source) -> None:
    """Give the deployment `deployment_id` the concurrency limit (and its options) of the
    deployment `source` (read before), if it has one: a deployment made again under another
    name keeps the limit set in Prefect (sync_deployment carries the schedules over)."""
    if source.concurrency_limit is None:
        return

    async def _do():
        async with get_client() as client:
            await client.update_deployment(
                UUID(deployment_id),
                DeploymentUpdate(
                    concurrency_limit=source.concurrency_limit,
                    concurrency_options=source.concurrency_options,
                ),
            )

    await call(_do())
