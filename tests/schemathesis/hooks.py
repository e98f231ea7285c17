"""Checks of ours for the conformance test (tests/conformance.rs), loaded with SCHEMATHESIS_HOOKS."""

import schemathesis

REUSED = "https://eventline.dev/problems/idempotency-key-reused"


@schemathesis.check
def only_idempotency_key_reuse_refuses_valid_data(ctx, response, case):
    """A schema-valid request is refused with 422 only for reusing an Idempotency-Key.

    Together with `positive_data_acceptance` (which expects 422 too, see schemathesis.toml) this
    is that check with exactly one declared exception.
    """
    meta = case.meta
    if response.status_code != 422 or meta is None or not meta.generation.mode.is_positive:
        return None
    kind = response.json().get("type") if "json" in response.headers.get("content-type", [""])[0] else None
    if kind != REUSED:
        raise AssertionError(f"Valid data refused with 422 {kind}: {response.text[:500]}")
    return None
