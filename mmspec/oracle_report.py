"""``mmspec oracle``: the live-kernel layer, and what it compared, family by family.

``mmspec oracle`` is ``mmspec verify --layer oracle``: the same table (mechanism × layer) and
the same ``--json`` object.  Under the table it adds the oracle's own view: for every scenario
family (``vma-merge``, ``placement``, ``brk``, ``mlock``, ``demand-paging``, ``pagemap``,
``cow-fork``, the random programs …) how many comparisons of the spec with the running kernel
agreed, diverged, or were skipped (with the reason), the first divergence of each family as
both ``maps`` listings, and the host configuration the kernel ran with.  With ``--json`` the
object gains a ``families`` key (family -> ``{"agreed", "diverged", "skipped", "first",
"reason"}``) and a ``host`` key; every key of ``verify``'s schema is unchanged.

The oracle tests record their comparisons with :func:`mmspec.oracle_spec.record`; the records
travel in the tests' reports (``tally.note``), so this works with pytest-xdist workers too.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from mmspec import verify
from mmspec.oracle_spec import AGREED, DIVERGED, FAMILIES, NOTE, SKIPPED

ORACLE = "oracle"


def families(results: Iterable[verify.TestResult]) -> dict[str, dict[str, Any]]:
    """The per-family outcomes recorded by the oracle tests, summed over tests (in node-id
    order, so "first" is the same from run to run)."""
    table: dict[str, dict[str, Any]] = {}
    for r in sorted(results, key=lambda r: r.nodeid):
        notes = (r.record or {}).get("notes", {}) or {}
        if r.layer != ORACLE or NOTE not in notes:
            continue
        for family, row in json.loads(notes[NOTE]).items():
            out = table.setdefault(family, {AGREED: 0, DIVERGED: 0, SKIPPED: 0})
            for key in (AGREED, DIVERGED, SKIPPED):
                out[key] += int(row.get(key, 0))
            for key in ("first", "reason"):
                if row.get(key) and key not in out:
                    out[key] = row[key]
    order = {name: i for i, name in enumerate(FAMILIES)}
    return dict(sorted(table.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def unrecorded(results: Iterable[verify.TestResult]) -> list[verify.TestResult]:
    """Oracle tests that failed or were skipped before recording any comparison."""
    return [r for r in sorted(results, key=lambda r: r.nodeid)
            if r.layer == ORACLE and r.outcome in (verify.FAILED, verify.SKIPPED)
            and NOTE not in ((r.record or {}).get("notes", {}) or {})]


def host_line(host: Mapping[str, Any] | None) -> str:
    if not host:
        return "host: not a Linux host the oracle can run on"
    return (f"host: kernel {host.get('kernel')}, page size {host.get('page_size')}, THP "
            f"{host.get('thp_enabled')}, overcommit_memory {host.get('overcommit_memory')}, "
            f"max_map_count {host.get('max_map_count')}, RLIMIT_MEMLOCK "
            f"{host.get('rlimit_memlock')}, CAP_SYS_ADMIN {host.get('cap_sys_admin')}, "
            f"CAP_IPC_LOCK {host.get('cap_ipc_lock')}")


def render_families(table: Mapping[str, Mapping[str, Any]], stray: list[verify.TestResult],
                    host: Mapping[str, Any] | None) -> str:
    """The family table with the first divergence of each family and the skip reasons."""
    out = ["", "oracle: the spec against the running kernel, by scenario family", ""]
    rows = [[name, str(row[AGREED]), str(row[DIVERGED]), str(row[SKIPPED])]
            for name, row in table.items()]
    if rows:
        total = [sum(int(r[i]) for r in rows) for i in (1, 2, 3)]
        rows.append(["total", *(str(t) for t in total)])
        out += verify._grid(["family", AGREED, DIVERGED, SKIPPED], rows)
    else:
        out.append("no oracle comparison was recorded")
    out += ["", host_line(host)]
    diverged = [(name, row["first"]) for name, row in table.items() if row.get("first")]
    if diverged:
        out += ["", "first divergence of each family", "-------------------------------"]
        for name, text in diverged:
            out.append(f"{name}:")
            out.append(verify._indent(text))
    reasons = [(name, row["reason"]) for name, row in table.items() if row.get("reason")]
    if reasons:
        out += ["", "why comparisons were skipped", "----------------------------"]
        out += [f"{name}: {reason}" for name, reason in reasons]
    if stray:
        title = "oracle tests that stopped before comparing"
        out += ["", title, "-" * len(title)]
        for r in stray:
            why = r.skip_reason if r.outcome == verify.SKIPPED else (r.failure or "").strip()
            first = why.splitlines()[0] if why else ""
            out.append(f"{verify._test_name(r.nodeid)}: {r.outcome}: {first}")
    return "\n".join(out) + "\n"


def _host() -> dict[str, Any] | None:
    from mmspec import livekernel

    if livekernel.unavailable():
        return None
    host = livekernel.host_config()
    host.pop("committed_as", None)  # moves from moment to moment
    return host


def run(options: argparse.Namespace, *, stdout: TextIO | None = None,
        stderr: TextIO | None = None) -> int:
    """``mmspec oracle``: ``verify`` on the oracle layer, then the family report."""
    stdout = stdout or sys.stdout
    seen: dict[str, verify.Collector] = {}
    original = verify.run_pytest

    def keep_collector(**kwargs: Any) -> tuple[verify.Collector, int, str]:
        collector, code, output = original(**kwargs)
        seen["collector"] = collector
        return collector, code, output

    buffer = io.StringIO()
    verify.run_pytest = keep_collector
    try:
        status = verify.run(options, stdout=buffer, stderr=stderr)
    finally:
        verify.run_pytest = original
    text = buffer.getvalue()
    collector = seen.get("collector")
    if collector is None:  # a usage error or nothing registered: verify said why
        stdout.write(text)
        return status
    results = list(collector.results.values())
    table = families(results)
    host = _host()
    if options.json:
        data = json.loads(text)
        data["families"] = table
        data["host"] = host
        stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    else:
        stdout.write(text)
        stdout.write(render_families(table, unrecorded(results), host))
    return status
