"""Checks schemathesis runs on every response of `make api-fuzz` (api/tools/api-fuzz.sh), for the
role in API_FUZZ_ROLE (root, viewer or anonymous), beside its own conformance checks."""
import os

import schemathesis

ROLE = os.environ.get("API_FUZZ_ROLE", "root")
# Operations that need no credentials (a registration proves itself with its signature).
PUBLIC = {"/api/v1/health", "/api/v1/ready", "/api/v1/openapi.json", "/api/v1/auth",
          "/api/v1/devices/register"}


@schemathesis.check
def only_503_among_server_errors(ctx, response, case):
    """No 5xx but the documented 503 (no quorum)."""
    if response.status_code >= 500 and response.status_code != 503:
        raise AssertionError(f"server error {response.status_code}: {response.text[:200]}")


@schemathesis.check
def errors_use_the_envelope(ctx, response, case):
    """Every error is {"code": non-zero, "message": "..."}."""
    if response.status_code < 400:
        return
    body = response.json()
    if not (isinstance(body, dict) and body.get("code") not in (None, 0)
            and isinstance(body.get("message"), str) and body["message"]):
        raise AssertionError(f"{response.status_code} without the error envelope: {body!r}")


@schemathesis.check
def role_is_respected(ctx, response, case):
    """Without credentials nothing but the public operations answers 2xx; a viewer changes
    nothing."""
    ok = 200 <= response.status_code < 300
    path = case.operation.path
    if ROLE == "anonymous" and ok and path not in PUBLIC:
        raise AssertionError(f"{case.method} {path} answered {response.status_code} without credentials")
    if ROLE == "viewer" and ok and case.method.upper() in ("POST", "PUT", "DELETE") \
            and path not in PUBLIC:
        raise AssertionError(f"a viewer's {case.method} {path} answered {response.status_code}")
