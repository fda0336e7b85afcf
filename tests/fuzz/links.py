"""OpenAPI links for schemathesis' stateful phase, inferred from the services' own documents.

The services publish no ``links``; without them ``--stateful=links`` has nothing to chain. Two
shapes cover every resource in Azora:

* a ``POST /x`` that creates, and operations on ``/x/{id}…``: the id comes from the created
  body (``#/id`` for a parameter named ``*id``, else the field of the parameter's name, e.g.
  ``#/code`` for ``/v1/accounts/{code}``);
* a ``PUT …/kind/{a}/{b}`` that stores, and any operation whose path parameters it names under
  the same collection (``kind``): they reuse the PUT's own path parameters.
"""

from __future__ import annotations

import copy
import re
from typing import Any

METHODS = ("get", "put", "post", "delete", "patch")
_PARAM = re.compile(r"\{([^}]+)\}")


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, item in doc.get("paths", {}).items()
        for method, op in item.items()
        if method in METHODS and isinstance(op, dict) and op.get("operationId")
    ]


def _collection(path: str) -> str | None:
    """The last static segment before the first parameter (``cohorts`` in
    ``/admin/v1/cohorts/{namespace}/{name}/status``)."""
    head = path.split("{", 1)[0].rstrip("/")
    return head.rsplit("/", 1)[-1] or None


def _success(op: dict[str, Any]) -> str | None:
    codes = sorted(c for c in op.get("responses", {}) if c.startswith("2"))
    # A create documents 201 beside a 200 replay: the link belongs to the create.
    return "201" if "201" in codes else (codes[0] if codes else None)


def with_links(doc: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """A copy of ``doc`` with inferred links, and how many were added."""
    doc = copy.deepcopy(doc)
    ops = _operations(doc)
    added = 0
    for s_method, s_path, source in ops:
        if s_method not in ("post", "put"):
            continue
        status = _success(source)
        if status is None:
            continue
        s_params = _PARAM.findall(s_path)
        links: dict[str, Any] = {}
        for t_method, t_path, target in ops:
            if target is source:
                continue
            t_params = _PARAM.findall(t_path)
            if not t_params:
                continue
            parameters: dict[str, str] = {}
            if s_method == "post" and not s_params and t_path.startswith(s_path + "/{"):
                first = t_params[0]
                if len(t_params) == 1:
                    field = "id" if first.endswith("id") else first
                    parameters[first] = f"$response.body#/{field}"
            elif (
                s_method == "put"
                and s_params
                and set(t_params) <= set(s_params)
                and _collection(t_path) == _collection(s_path)
            ):
                parameters = {p: f"$request.path.{p}" for p in t_params}
            if parameters:
                name = f"{t_method.upper()} {t_path}"
                links[name] = {"operationId": target["operationId"], "parameters": parameters}
        if links:
            response = source["responses"][status]
            response.setdefault("links", {}).update(links)
            added += len(links)
    return doc, added
