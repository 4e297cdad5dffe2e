"""The OpenAPI schema says what the API answers when it refuses.

Every operation can answer 401 (no or a wrong token), 403 (no role, or not an
operator), 429 (throttled); those that read query parameters or a body can
answer 400 (a malformed filter, offset or field), those on one object 404.
Errors share one shape: ``detail`` and, for a field's problem, the field's
name with a list of messages. Added to every operation by this hook
(SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]) rather than by hand on each.
"""

from typing import Any

ERROR_SCHEMA = {
    "type": "object",
    "description": "Why the request was refused: `detail`, and for a field's problem the field's name "
    "with a list of messages (some refusals add what they are about, as a maintenance plan's "
    "`unplaced` VMs).",
    "properties": {"detail": {"type": "string"}},
    "additionalProperties": True,
}

ERRORS = {
    "400": "Malformed input: a filter, the paging or a field (named in the body).",
    "401": "No credentials, or a wrong token.",
    "403": "The account has no role, or the action is for operators.",
    "404": "No such object.",
    "415": "The body is not JSON (Content-Type: application/json).",
    "429": "Too many requests (or failed logins) from this client: try again later.",
}


def add_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    ref = {"$ref": "#/components/schemas/Error"}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            wanted = ["401", "403", "429"]
            params = operation.get("parameters", [])
            if method in ("post", "put", "patch") or any(p.get("in") == "query" for p in params):
                wanted.append("400")
            if method in ("post", "put", "patch"):
                wanted.append("415")
            if "{" in path:
                wanted.append("404")
            for code in wanted:
                responses.setdefault(code, {"description": ERRORS[code]})
            for code, response in responses.items():
                # Refusals documented on the operation (409...) take the same shape.
                if code.startswith("4") and not response.get("content"):
                    response["content"] = {"application/json": {"schema": ref}}
    return result
