#!/usr/bin/env python3
"""List the public API of a crate from its rustdoc JSON, one item per line.

    public-api.py target/doc/toolhost.json > host/public-api.txt

Walks from the crate root through public modules and re-exports (what an
embedder can name), and lists each item with its kind: modules, structs with
their public fields, enums with their variants, traits, functions, constants,
type aliases, macros, and the public methods of inherent impls. `#[doc(hidden)]`
items are left out. Items of other crates re-exported here are listed as
`use` lines with their source path.

Why our own walker rather than `cargo public-api`: that tool needs a nightly
toolchain to be installed, and CI has only the stable one (the JSON comes
from stable rustdoc with RUSTC_BOOTSTRAP=1; see `make check-api`).
"""

import json
import sys


def main(path: str) -> None:
    doc = json.load(open(path))
    index = doc["index"]
    root = index[str(doc["root"])]
    crate = root["name"]
    lines: set[str] = set()

    def item(i):
        return index.get(str(i))

    def hidden(it) -> bool:
        attrs = it.get("attrs") or []
        return any("doc(hidden)" in (a if isinstance(a, str) else json.dumps(a)) for a in attrs)

    def public(it) -> bool:
        return it.get("visibility") == "public" and not hidden(it)

    seen: set[tuple[str, int]] = set()

    def walk(it, path: str) -> None:
        key = (path, id(it))
        if key in seen:
            return
        seen.add(key)
        inner = it["inner"]
        kind = next(iter(inner))
        body = inner[kind]
        if kind == "module":
            if path != crate:
                lines.add(f"{path} mod")
            for child_id in body["items"]:
                child = item(child_id)
                if child is None or not public(child):
                    continue
                if "use" in child["inner"]:
                    u = child["inner"]["use"]
                    target = item(u["id"]) if u.get("id") is not None else None
                    if u.get("is_glob"):
                        if target is not None:
                            walk_glob(target, path)
                        else:
                            lines.add(f"{path}::* use {u['source']}")
                        continue
                    name = u["name"]
                    if target is None:
                        lines.add(f"{path}::{name} use {u['source']}")
                    else:
                        walk(target, f"{path}::{name}")
                else:
                    walk(child, f"{path}::{child['name']}")
        elif kind in ("struct", "enum", "union", "trait"):
            lines.add(f"{path} {kind}")
            if kind == "struct":
                fields = body.get("kind", {})
                members = fields["plain"]["fields"] if isinstance(fields, dict) and "plain" in fields else []
            else:
                members = body.get("variants", body.get("items", []))
            for m in members:
                mi = item(m)
                # Fields must be public; variants and trait items are as
                # public as their enum or trait.
                if mi is not None and not hidden(mi) and (kind != "struct" or public(mi)):
                    lines.add(f"{path}::{mi['name']} {member_kind(kind, mi)}")
            if kind != "trait":
                impls(body, path)
        else:
            lines.add(f"{path} {kind}")

    def member_kind(kind: str, mi) -> str:
        return {"struct": "field", "enum": "variant"}.get(kind) or next(iter(mi["inner"]))

    def walk_glob(target, path: str) -> None:
        inner = target["inner"]
        if "module" in inner:
            for child_id in inner["module"]["items"]:
                child = item(child_id)
                if child is not None and public(child) and child.get("name"):
                    walk(child, f"{path}::{child['name']}")

    def impls(body, path: str) -> None:
        for impl_id in body.get("impls", []):
            impl = item(impl_id)
            if impl is None:
                continue
            ib = impl["inner"].get("impl", {})
            # Inherent impls only: trait impls are the trait's API.
            if ib.get("trait") is not None or ib.get("is_synthetic") or ib.get("blanket_impl"):
                continue
            for m in ib.get("items", []):
                mi = item(m)
                if mi is not None and public(mi):
                    lines.add(f"{path}::{mi['name']} {next(iter(mi['inner']))}")

    walk(root, crate)
    for line in sorted(lines):
        print(line)


if __name__ == "__main__":
    main(sys.argv[1])
