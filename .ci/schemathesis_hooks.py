"""Schemathesis hooks for .ci/run: keep the fuzzer's URLs on loopback.

Generated bodies carry arbitrary `url` values; medialink resolves and fetches them
(at creation, for `verify`, `check` and `send`). CI must not reach the outside
world, so every generated URL that the body would fetch is replaced by a sample
file on the loopback origin that .ci/run starts (MEDIALINK_FUZZ_ORIGIN). Invalid
URLs are replaced too: schemathesis still explores every other field, and the
URL parser has its own unit and property tests.
"""

import os

import schemathesis

ORIGIN = os.environ["MEDIALINK_FUZZ_ORIGIN"]


def _loopback(item):
    if isinstance(item, dict) and "url" in item:
        kind = item.get("kind")
        name = "voice.ogg" if kind in ("audio", "voice") else "photo.jpg"
        item["url"] = f"{ORIGIN}/{name}"
    return item


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    body = case.body
    if isinstance(body, list):
        case.body = [_loopback(i) for i in body]
    elif isinstance(body, dict):
        case.body = _loopback(body)
