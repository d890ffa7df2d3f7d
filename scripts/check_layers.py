#!/usr/bin/env python3
"""Layering check run by .ci/run; exits 1 on any violation.

1. Each workspace crate may depend (by path) only on the crates its layer allows, listed in
   LAYERS below (the compiler already refuses cycles between crates; this keeps, say, routing
   from ever depending on store).
2. Inside each crate, the top-level modules import each other one way only: no cycle among
   `crate::X` references, or `super::` paths that climb to the crate root (test modules
   excepted), found with Tarjan's algorithm.

Usage: scripts/check_layers.py [REPO]   (default: the repository this script is in)
"""
import glob
import os
import re
import sys
import tomllib

# crate -> the workspace crates it may depend on (see docs/ARCHITECTURE.md).
LAYERS = {
    "optimizer-types": set(),
    "optimizer-providers": {"optimizer-types"},
    "optimizer-routing": {"optimizer-types"},
    "optimizer-store": {"optimizer-types"},
    "optimizer": {"optimizer-types", "optimizer-providers", "optimizer-routing", "optimizer-store"},
    "optimizer-worker": {"optimizer"},
}

CRATE_REF = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
CRATE_GROUP = re.compile(r"\bcrate::\{([^}]*)\}")
GROUP_HEAD = re.compile(r"(?:^|,)\s*([a-z_][a-z0-9_]*)")
SUPER_REF = re.compile(r"\b((?:super::)+)([a-z_][a-z0-9_]*)")


def module_depth(rel):
    """How many `super::` lead from the file's module to the crate root: 1 for `src/x.rs` and
    `src/x/mod.rs`, 2 for `src/x/y.rs` and `src/x/y/mod.rs`, and so on."""
    parts = rel.split(os.sep)
    if parts[-1] == "mod.rs":
        parts = parts[:-1]
    return len(parts)


def crate_dependencies(manifest):
    """Workspace crates `manifest` depends on in [dependencies] (dev-dependencies may go
    anywhere without creating a cycle in the build)."""
    with open(manifest, "rb") as f:
        data = tomllib.load(f)
    deps = data.get("dependencies", {})
    return data["package"]["name"], {
        name for name, spec in deps.items() if isinstance(spec, dict) and "path" in spec
    }


def module_edges(src):
    edges = {}
    for path in glob.glob(os.path.join(src, "**", "*.rs"), recursive=True):
        top = os.path.relpath(path, src).split(os.sep)[0].removesuffix(".rs")
        if top in ("lib", "main"):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read().split("#[cfg(test)]")[0]
        targets = set(CRATE_REF.findall(text))
        for group in CRATE_GROUP.findall(text):
            targets.update(GROUP_HEAD.findall(group))
        # `super::…::x` that climbs to the crate root names top-level module x too.
        depth = module_depth(os.path.relpath(path, src))
        for supers, name in SUPER_REF.findall(text):
            if supers.count("super::") == depth:
                targets.add(name)
        targets.discard(top)
        edges.setdefault(top, set()).update(targets)
    return edges


def cycles(edges):
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def main():
    repo = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    problems = []
    manifests = [
        m for m in glob.glob(os.path.join(repo, "**", "Cargo.toml"), recursive=True)
        if "/target/" not in m
    ]
    for manifest in sorted(manifests):
        with open(manifest, "rb") as f:
            if "package" not in tomllib.load(f):
                continue
        name, deps = crate_dependencies(manifest)
        allowed = LAYERS.get(name)
        if allowed is None:
            problems.append(f"{name}: not in scripts/check_layers.py LAYERS; place it in a layer")
            continue
        for dep in sorted(deps - allowed):
            problems.append(f"{name} depends on {dep}, which its layer may not use")
        src = os.path.join(os.path.dirname(manifest), "src")
        for component in cycles(module_edges(src)):
            problems.append(f"{name}: import cycle among modules {', '.join(component)}")
    for p in problems:
        print(p)
    print(f"layers: {len(manifests)} crates checked, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
