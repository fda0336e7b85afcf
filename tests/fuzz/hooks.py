"""schemathesis hooks for the fuzz runs (loaded with ``SCHEMATHESIS_HOOKS=tests.fuzz.hooks``).

Only requests that are valid HTTP are sent. schemathesis (3.x) filters header values that are
not latin-1 or hold CR/LF, but still generates other control characters (``\\x0f``, ``\\x7f``)
in header values; RFC 9110 §5.5 forbids them, and uvicorn's parser refuses such a request with
its own ``400 text/plain`` ("Invalid HTTP request received.") before any service code runs. Those
responses tested the HTTP parser, not the API, and showed up as ``content_type_conformance``
failures. Every other generated header (unknown names, wrong types, empty values) is kept.
"""

from __future__ import annotations

import re
from typing import Any

import schemathesis
from jsonschema import Draft202012Validator
from schemathesis.hooks import HookContext

# RFC 9110 §5.6.2 token (field-name) and §5.5 field-value (VCHAR, obs-text, SP, HTAB).
_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]*$")


def valid_http_headers(headers: dict[str, Any] | None) -> bool:
    if not headers:
        return True
    return all(
        bool(_NAME.match(str(name))) and bool(_VALUE.match(str(value)))
        for name, value in headers.items()
    )


@schemathesis.hook
def filter_headers(context: HookContext, headers: dict[str, Any] | None) -> bool:
    return valid_http_headers(headers)


@schemathesis.hook
def after_call(context: HookContext, case: Any, response: Any) -> None:
    """JSON is UTF-8 (RFC 8259 §8.1; ``application/json`` defines no charset). schemathesis reads
    ``response.text``, for which ``requests`` guesses the charset of a body whose media type has
    none: a 422 problem quoting a path of odd characters was guessed as Shift-JIS and reported
    as "JSON deserialization error". The body is unchanged; only the decoding is fixed."""
    media_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type.endswith(("/json", "+json")) and hasattr(response, "encoding"):
        response.encoding = response.encoding or "utf-8"


def _as_text(value: Any) -> str:
    # What schemathesis puts into the URL for a scalar that is not a string.
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _negation_survives(context: HookContext, path_parameters: dict[str, Any]) -> bool:
    """False when every path value, as the text that is sent, is valid for its parameter: a
    negative integer/null for a string parameter (``0``, ``null``) is sent as the valid text
    "0"/"null" (``DELETE /admin/v1/pricing-policies/0/null``: both match the declared
    patterns, and a 204 is the right answer). Such a case is no longer negative data."""
    operation = getattr(context, "operation", None)
    if operation is None:
        return True
    for parameter in operation.path_parameters:
        if parameter.name not in path_parameters:
            continue
        value = path_parameters[parameter.name]
        schema = parameter.definition.get("schema", {})
        text = value if isinstance(value, str) else _as_text(value)
        if isinstance(value, str) or not Draft202012Validator(schema).is_valid(text):
            return True
    return False


@schemathesis.hook
def filter_path_parameters(context: HookContext, path_parameters: dict[str, Any] | None) -> bool:
    """A negative path value that is not a string (an object, a list) is put into the URL as its
    Python ``str()`` without percent-encoding (strings are encoded); a ``/``, ``?`` or ``#`` in it
    then moves the request to another route (``POST /v1/accounts/{'…?…'}/close`` arrived as
    ``POST /v1/accounts/{'…`` and got a correct 405), which tests the URL, not the operation."""
    if not path_parameters:
        return True
    if any(
        not isinstance(value, str) and any(c in str(value) for c in "/?#")
        for value in path_parameters.values()
    ):
        return False
    if all(isinstance(v, str) for v in path_parameters.values()):
        return True
    return _negation_survives(context, path_parameters)
