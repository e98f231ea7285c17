"""Checks of ours for the conformance test (tests/conformance.rs), loaded with SCHEMATHESIS_HOOKS."""

import schemathesis

PROBLEMS = "https://eventline.dev/problems/"
# The answers a schema-valid request may get because of earlier requests (schemathesis.toml).
DECLARED = {
    422: PROBLEMS + "idempotency-key-reused",
    412: PROBLEMS + "version-mismatch",
}


@schemathesis.check
def only_state_refuses_valid_data(ctx, response, case):
    """A schema-valid request is refused with 422 only for reusing an Idempotency-Key, and with
    412 only for an If-Match version the aggregate has moved past.

    With `positive_data_acceptance` (which expects 412 and 422 too, see schemathesis.toml) this is
    that check with exactly these two declared exceptions.
    """
    meta = case.meta
    expected = DECLARED.get(response.status_code)
    if expected is None or meta is None or not meta.generation.mode.is_positive:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    kind = response.json().get("type") if "json" in content_type else None
    if kind != expected:
        raise AssertionError(f"Valid data refused with {response.status_code} {kind}: {response.text[:500]}")
    if response.status_code == 412 and not any(name.lower() == "if-match" for name in (case.headers or {})):
        raise AssertionError("412 to a request without If-Match")
    return None
