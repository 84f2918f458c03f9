"""Derive the emulator's OpenAPI subset from m3ter's published spec.

Keeps only the operations the emulator implements and the component schemas they reference
(transitively), and drops every prose or vendor-extension field, so the committed file is pure
contract data (paths, field names, types, enums, limits).

Usage::

    python scripts/derive_openapi_subset.py [--spec PATH] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SPEC = REPO.parent / "shared" / "reference" / "m3ter-openapi.json"
DEFAULT_OUT = REPO / "airflow_provider_m3ter" / "emulator" / "openapi_subset.json"

# (path, method) of every operation the emulator implements.
OPERATIONS: list[tuple[str, str]] = [
    ("/oauth/token", "post"),
    ("/organizations/{orgId}/meters", "get"),
    ("/organizations/{orgId}/meters", "post"),
    ("/organizations/{orgId}/meters/{id}", "get"),
    ("/organizations/{orgId}/meters/{id}", "put"),
    ("/organizations/{orgId}/meters/{id}", "delete"),
    ("/organizations/{orgId}/accounts", "get"),
    ("/organizations/{orgId}/accounts", "post"),
    ("/organizations/{orgId}/accounts/{id}", "get"),
    ("/organizations/{orgId}/aggregations", "get"),
    ("/organizations/{orgId}/aggregations", "post"),
    ("/organizations/{orgId}/aggregations/{id}", "get"),
    ("/organizations/{orgId}/aggregations/{id}", "delete"),
    ("/organizations/{orgId}/products", "get"),
    ("/organizations/{orgId}/products", "post"),
    ("/organizations/{orgId}/products/{id}", "get"),
    ("/organizations/{orgId}/plans", "get"),
    ("/organizations/{orgId}/plans", "post"),
    ("/organizations/{orgId}/plans/{id}", "get"),
    ("/organizations/{orgId}/measurements", "post"),
    ("/organizations/{orgId}/events", "get"),
    ("/organizations/{orgId}/events/{id}", "get"),
    ("/organizations/{orgId}/fileuploads/measurements/generateUploadUrl", "post"),
    ("/organizations/{orgId}/fileuploads/measurements/jobs", "get"),
    ("/organizations/{orgId}/fileuploads/measurements/jobs/{id}", "get"),
    ("/organizations/{orgId}/billjobs", "get"),
    ("/organizations/{orgId}/billjobs", "post"),
    ("/organizations/{orgId}/billjobs/{id}", "get"),
    ("/organizations/{orgId}/billjobs/{id}/cancel", "post"),
    ("/organizations/{orgId}/dataexports/adhoc", "post"),
    ("/organizations/{orgId}/dataexports/jobs/{id}", "get"),
]

# Prose and example keys removed everywhere; "x-*" extensions are removed too.
PROSE_KEYS = {"description", "summary", "example", "examples", "externalDocs", "title"}


def strip_prose(node: Any, *, in_properties: bool = False) -> Any:
    """Return a copy of ``node`` without prose, examples or ``x-*`` keys.

    :param node: any JSON value from the spec.
    :param in_properties: True when ``node`` is a ``properties`` map, whose keys are field names
        (a field may legitimately be called ``description``) and must be kept.
    """
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if not in_properties and (key in PROSE_KEYS or key.startswith("x-")):
                continue
            out[key] = strip_prose(value, in_properties=(key == "properties" and not in_properties))
        return out
    if isinstance(node, list):
        return [strip_prose(item) for item in node]
    return node


def collect_refs(node: Any, found: set[str]) -> None:
    """Add every ``$ref`` target found anywhere inside ``node`` to ``found``.

    :param node: any JSON value.
    :param found: the set of ``#/components/...`` references collected so far.
    """
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            found.add(ref)
        for value in node.values():
            collect_refs(value, found)
    elif isinstance(node, list):
        for item in node:
            collect_refs(item, found)


def resolve_pointer(spec: dict[str, Any], ref: str) -> Any:
    """Follow a local JSON pointer such as ``#/components/schemas/Meter``.

    :param spec: the whole spec document.
    :param ref: the reference string.
    """
    if not ref.startswith("#/"):
        raise ValueError(f"only local references are supported, got {ref!r}")
    node: Any = spec
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def derive(spec: dict[str, Any]) -> dict[str, Any]:
    """Build the subset document from the full spec.

    :param spec: the parsed full OpenAPI document.
    """
    paths: dict[str, dict[str, Any]] = {}
    for path, method in OPERATIONS:
        try:
            operation = spec["paths"][path][method]
        except KeyError:
            raise SystemExit(f"operation {method.upper()} {path} is not in the spec") from None
        paths.setdefault(path, {})[method] = strip_prose(operation)

    components: dict[str, dict[str, Any]] = {}
    pending: set[str] = set()
    collect_refs(paths, pending)
    seen: set[str] = set()
    while pending:
        ref = pending.pop()
        if ref in seen:
            continue
        seen.add(ref)
        _, _, section, name = ref.split("/", 3)
        target = strip_prose(resolve_pointer(spec, ref))
        components.setdefault(section, {})[name] = target
        collect_refs(target, pending)

    return {
        "openapi": spec.get("openapi", "3.0.1"),
        "info": {"title": "m3ter API subset implemented by the emulator", "version": spec["info"]["version"]},
        "paths": {path: paths[path] for path in sorted(paths)},
        "components": {
            section: {name: items[name] for name in sorted(items)}
            for section, items in sorted(components.items())
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point.

    :param argv: arguments (defaults to ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="full m3ter OpenAPI JSON file")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the subset")
    args = parser.parse_args(argv)
    if not args.spec.is_file():
        print(f"spec file not found: {args.spec}", file=sys.stderr)
        return 2
    spec = json.loads(args.spec.read_text(encoding="utf-8"))
    subset = derive(spec)
    args.out.write_text(json.dumps(subset, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    schemas = len(subset["components"].get("schemas", {}))
    print(f"wrote {args.out} ({sum(len(v) for v in subset['paths'].values())} operations, {schemas} schemas)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
