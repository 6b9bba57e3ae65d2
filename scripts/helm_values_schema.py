#!/usr/bin/env python3
"""Keep the Helm chart's `config` values in step with the server's settings.

`deploy/helm/qwen3-reranker/values.schema.json` is hand-written except `properties.config`, which
this script derives from `server.core.settings.Settings` (each setting in camelCase, its type, bounds,
choices and description; null keeps the server's default). Run it after adding a setting:

    python scripts/helm_values_schema.py          # rewrite the schema's config section
    python scripts/helm_values_schema.py --check  # exit 1 if it is out of date (tests/test_helm.py)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "deploy/helm/qwen3-reranker/values.schema.json"
# Set by the chart itself: the port its probes and Service use, the log file in /workspace, the
# API key, which comes from a Secret (apiKey.*), never from plain values, the keys with a default
# priority (secrets too: RERANK_API_KEY_PRIORITY from a Secret through extraEnv's valueFrom), and the
# score cache (scoreCache.*: its URL may hold a password, so it too comes from a Secret).
CHART_OWNED = {
    "host",
    "port",
    "log_file",
    "api_key",
    "api_key_priority",
    "score_cache_size",
    "score_cache_ttl",
    "score_cache_url",
}
KEEP = ("type", "enum", "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def config_schema() -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from server.core.settings import Settings

    schema = Settings.model_json_schema()
    defs = schema.get("$defs", {})

    def flat(item: dict[str, Any]) -> dict[str, Any]:
        """An enum by reference, or a choice of strings (`auto` or a kind), as one string enum."""
        if "$ref" in item:
            return defs[item["$ref"].rsplit("/", 1)[1]]
        choices = [flat(variant) for variant in item.get("anyOf", [])]
        if choices and all(c.get("type") == "string" and ("const" in c or "enum" in c) for c in choices):
            return {"type": "string", "enum": [v for c in choices for v in c.get("enum", [c.get("const")])]}
        return item

    properties: dict[str, Any] = {}
    for name, prop in schema["properties"].items():
        if name in CHART_OWNED:
            continue
        variants = prop.get("anyOf", [prop])
        if prop.get("type") == "array":  # one value per model: a list, one value, or comma-separated
            item = {k: v for k, v in flat(prop["items"]).items() if k in KEEP}
            variants = [{"type": "array", "items": item}, item]
            if item != {"type": "string"}:
                variants.append({"type": "string"})  # "0.25,0.65"
            properties[camel(name)] = {
                "description": f"--{name.replace('_', '-')}: {prop.get('description', '')}",
                "anyOf": [*variants, {"type": "null"}],
            }
            continue
        types = [{k: v for k, v in variant.items() if k in KEEP} for variant in variants]
        if not any(t.get("type") == "null" for t in types):
            types.append({"type": "null"})
        properties[camel(name)] = {
            "description": f"--{name.replace('_', '-')}: {prop.get('description', '')}",
            "anyOf": types,
        }
    return {
        "type": "object",
        "description": "server settings, each a flag in camelCase (RERANK_<FLAG_NAME>); null keeps the default",
        "additionalProperties": False,
        "properties": properties,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the schema is out of date")
    args = parser.parse_args()
    schema = json.loads(SCHEMA.read_text())
    expected = config_schema()
    if args.check:
        if schema["properties"].get("config") != expected:
            print(f"{SCHEMA.relative_to(ROOT)}: config is out of date; run python scripts/helm_values_schema.py")
            return 1
        return 0
    schema["properties"]["config"] = expected
    SCHEMA.write_text(json.dumps(schema, indent=2) + "\n")
    print(f"wrote {SCHEMA.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
