"""/api/v1/openapi.json as the API answers: the bearer scheme, every error status a route
returns with the error body `{"detail": str}`, and the bodies that routes check themselves.

What each route says on its own: its particular errors (`responses=errors(403, 503)` on the
decorator) and, for a body it validates with reasons of its own (a schedule, email
settings), the model of what it accepts (`openapi_extra=body(Model)`). What every route of a
kind answers is added here: 401 where a token is needed, 404 where the path names something,
422 where there are parameters or a body, 503 and 507 where it writes (storage_errors.py)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from scriptflow_prefect.ui_overlay.schemas import Error

WHY = {
    400: "The request cannot be done as sent: the reason says what to change.",
    401: "No API token, or one that is unknown, expired or revoked.",
    403: "Only an administrator can do this.",
    404: "Nothing with this id (of any size or shape), or nothing this user may see.",
    409: "The request conflicts with the current state: the reason says which.",
    413: "The upload is larger than the 10 MB limit.",
    422: "A parameter or the body is not valid: the reason says which and why.",
    429: "Too many failed attempts: try again after Retry-After seconds.",
    502: "The other end (SMTP server, chat service) refused the message.",
    503: (
        "Prefect is not reachable (or busy), or the database is busy (a backup?): try again "
        "after Retry-After seconds; nothing was changed."
    ),
    507: "The disk is full; nothing was changed.",
}
_REF = "#/components/schemas/"
# What a client can follow from an answer (OpenAPI links): the new script's id and version
# to every operation on it, the new run's id to every operation on the run.
_LINKS = (
    (
        "post",
        "/scripts",
        "201",
        {"script_id": "$response.body#/id", "version": "$response.body#/version"},
    ),
    ("post", "/scripts/{script_id}/runs", "202", {"run_id": "$response.body#/id"}),
)
_bodies: dict[str, type[BaseModel]] = {}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route that answers these error statuses."""
    return {code: {"model": Error, "description": WHY[code]} for code in codes}


def body(model: type[BaseModel], media_type: str = "application/json") -> dict[str, Any]:
    """The `openapi_extra=` of a route that reads its body itself but accepts `model`."""
    _bodies[model.__name__] = model
    schema = {"$ref": _REF + model.__name__}
    return {"requestBody": {"required": True, "content": {media_type: {"schema": schema}}}}


def text_answer(media_type: str) -> dict[int | str, dict[str, Any]]:
    """The `responses=` part of a route that answers 200 with text (a download)."""
    return {
        200: {"description": "The text", "content": {media_type: {"schema": {"type": "string"}}}}
    }


def file_answer(listing: type[BaseModel] | None = None) -> dict[int | str, dict[str, Any]]:
    """The `responses=` part of a route that answers 200 with a file to download (and, with
    `listing`, a folder's listing as JSON instead when the path is a folder)."""
    content: dict[str, Any] = {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
    }
    if listing is not None:
        _bodies[listing.__name__] = listing
        content["application/json"] = {"schema": {"$ref": _REF + listing.__name__}}
    return {200: {"description": "The file (an attachment)", "content": content}}


def content_body() -> dict[str, Any]:
    """PUT .../content: the file's bytes as the body, or a multipart form with `file` (one, or
    several files, or one .zip) and `entry` (which file is the script)."""
    raw = {"schema": {"type": "string", "format": "binary"}}
    form = {
        "schema": {
            "type": "object",
            "properties": {
                "file": {"type": "string", "format": "binary"},
                "entry": {"type": "string", "maxLength": 400},
            },
            "required": ["file"],
        }
    }
    content = {"application/octet-stream": raw, "text/plain": raw, "multipart/form-data": form}
    return {"requestBody": {"required": True, "content": content}}


def _error(code: int) -> dict[str, Any]:
    return {
        "description": WHY[code],
        "content": {"application/json": {"schema": {"$ref": _REF + "Error"}}},
    }


def _add_model(schemas: dict[str, Any], model: type[BaseModel]) -> None:
    schema = model.model_json_schema(ref_template=_REF + "{model}")
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema


def document(api: FastAPI) -> None:
    """Make `api.openapi()` the document described above."""

    def openapi() -> dict[str, Any]:
        if api.openapi_schema:
            return api.openapi_schema
        doc = get_openapi(
            title=api.title,
            version=api.version,
            description=api.description,
            routes=api.routes,
        )
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        # FastAPI's list-of-errors shape is not what this API answers (app.py: one reason).
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        _add_model(schemas, Error)
        for model in _bodies.values():
            _add_model(schemas, model)
        for operations in doc["paths"].values():
            for method, op in operations.items():
                responses = op.setdefault("responses", {})
                codes = set()
                if method in ("post", "put", "patch", "delete"):
                    codes |= {503, 507}  # the database busy (a backup?) or the disk full
                if op.get("security"):
                    codes.add(401)
                where = {p.get("in") for p in op.get("parameters", [])}
                if "path" in where:
                    codes.add(404)  # app.py: a path id that is no id is "not found" too
                if where - {"path"} or op.get("requestBody"):
                    codes.add(422)
                if op.get("requestBody"):
                    codes.add(400)  # a body that cannot be read (not JSON, not a form)
                elif "422" in responses and 422 not in codes:
                    del responses["422"]  # FastAPI's guess for a path-only route: it is 404
                for code in codes:
                    responses[str(code)] = _error(code)
        _add_links(doc["paths"])
        api.openapi_schema = doc
        return doc

    api.openapi = openapi  # type: ignore[method-assign]


def _add_links(paths: dict[str, Any]) -> None:
    for method, path, status, values in _LINKS:
        answer = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if answer is None:
            continue
        links = answer.setdefault("links", {})
        for target, operations in paths.items():
            needs = set(re.findall(r"{([^}]+)}", target))
            if not needs or not needs <= set(values):
                continue
            for op in operations.values():
                links[op["operationId"]] = {
                    "operationId": op["operationId"],
                    "parameters": {name: values[name] for name in sorted(needs)},
                }


def allowed_methods(api: FastAPI, path: str) -> list[str]:
    """The methods the API answers at `path` (relative to the API's root), for a 405's Allow:
    each method is a route of its own, so the router alone names only one of them."""
    allowed: set[str] = set()
    for template, operations in api.openapi()["paths"].items():
        pattern = re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            allowed |= {m.upper() for m in operations}
    return sorted(allowed)
