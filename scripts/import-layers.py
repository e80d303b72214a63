#!/usr/bin/env python3
"""Checks that a Rust crate's modules import each other without cycles, and that no module
imports from a layer above it.

    import-layers.py SRC_DIR [--depth=N ...] [LOWER:UPPER ...]

Each `crate::…` and `super::…` path in a file (test modules left out) is an edge to the deepest
module file it names. The graph is checked for cycles at file level, and at each --depth (the
first N path components: --depth=1 groups `transport::websocket::table` into `transport`).
`LOWER:UPPER` forbids any module under LOWER from importing one under UPPER (for example
`transport:client`). Prints what it finds; exits 1 if anything is wrong.
"""
import os
import re
import sys


def modules(root):
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(folder, name)
            parts = os.path.relpath(path, root)[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            found[tuple(parts)] = path
    return found


def without_tests(text):
    test_module = re.search(r"#\[cfg\(test\)\]\s*(pub(\(crate\))?\s+)?mod \w+\s*\{", text)
    text = text[: test_module.start()] if test_module else text
    return re.sub(r"//[^\n]*", "", text)


def edges(found):
    known = set(found)

    def deepest(path):
        for i in range(len(path), 0, -1):
            if tuple(path[:i]) in known:
                return tuple(path[:i])
        return None

    graph = {}
    for module, path in found.items():
        is_folder = os.path.basename(path) in ("mod.rs", "lib.rs", "main.rs")
        # `super` of a folder module is its parent; of a file, the folder it is in.
        parent = list(module[:-1]) if is_folder else list(module[:-1])
        targets = set()
        for m in re.finditer(r"\b(crate|super)((?:::(?:\w+|\{[^;]*?\}))+)", without_tests(open(path).read())):
            head, rest = m.group(1), m.group(2)
            base = [] if head == "crate" else parent
            prefix = []
            for segment in re.findall(r"::(\w+|\{[^;]*?\})", rest):
                if segment.startswith("{"):
                    for alt in segment[1:-1].split(","):
                        names = [n.strip() for n in alt.split("::")]
                        names = [re.sub(r"\s+as\s+\w+", "", n) for n in names if n and n not in ("self", "*") and not n.startswith("{")]
                        target = deepest(base + prefix + names)
                        if target:
                            targets.add(target)
                    prefix = None
                    break
                prefix.append(segment)
            if prefix is not None:
                target = deepest(base + prefix)
                if target:
                    targets.add(target)
        graph[module] = {t for t in targets if t != module}
    return graph


def grouped(graph, depth):
    out = {}
    for a, bs in graph.items():
        out.setdefault(a[:depth], set()).update(b[:depth] for b in bs if b[:depth] != a[:depth])
    return out


def cycles(graph):
    index, low, stack, on_stack, components = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                components.append(component)

    for v in list(graph):
        if v not in index:
            visit(v)
    return components


def name(module):
    return "::".join(module) or "crate"


def main(argv):
    if not argv:
        print(__doc__)
        return 2
    root = argv[0]
    depths = [0] + [int(a.split("=", 1)[1]) for a in argv[1:] if a.startswith("--depth=")]
    rules = [a.split(":", 1) for a in argv[1:] if ":" in a and not a.startswith("--")]
    graph = edges(modules(root))
    wrong = 0
    for depth in depths:
        g = grouped(graph, depth) if depth else graph
        for component in cycles(g):
            wrong += 1
            members = sorted(name(m) for m in component)
            print(f"{root}: import cycle{f' (depth {depth})' if depth else ''}: {', '.join(members)}")
    for lower, upper in rules:
        for a, bs in graph.items():
            for b in bs:
                if name(a).startswith(lower) and name(b).startswith(upper):
                    wrong += 1
                    print(f"{root}: {name(a)} imports {name(b)} ({lower} is below {upper})")
    if not wrong:
        print(f"{root}: no import cycles, layers respected")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
