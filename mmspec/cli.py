"""The ``mmspec`` command line.

``mmspec verify``   run every verification layer, print the table
``mmspec conform``  only the impl-vs-spec layers (lockstep, bugs)
``mmspec oracle``   only the live-kernel layer, and its scenario families (agreed/diverged)
``mmspec explain``  walk through one mechanism on a concrete example
``mmspec list``     list the registered mechanisms and explain topics
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mmspec import verify


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmspec",
        description="An executable specification of Linux memory management.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    verify_parser = commands.add_parser(
        "verify", help="run every verification layer for every mechanism",
        description="Run every verification layer for every mechanism and print one table "
                    "(mechanism x layer) with counts, times and the first counterexample "
                    "of each failure. Exit status 1 on any failure.")
    verify.add_arguments(verify_parser)
    for name, layers, what in (
        ("conform", "lockstep,bugs", "check the optimized impl against the spec (lockstep and bug layers)"),
        ("oracle", "oracle", "check the running kernel against the spec (oracle layer)"),
    ):
        sub = commands.add_parser(name, help=what, description=f"{what[0].upper()}{what[1:]}: "
                                  f"mmspec verify --layer {layers}.")
        verify.add_arguments(sub)
        sub.set_defaults(layer=layers)
    explain_parser = commands.add_parser(
        "explain", help="walk through one mechanism on a concrete example",
        description="Walk through one mechanism on an example chosen by the seed. "
                    "Further --name value options go to the mechanism's walk-through.")
    explain_parser.add_argument("topic", help="a mechanism or topic name (see mmspec list)")
    explain_parser.add_argument("--seed", type=int, default=0, help="chooses the example")
    commands.add_parser("list", help="list the registered mechanisms and explain topics")
    return parser


def _explain(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from mmspec import explain
    from mmspec.mechanisms import all_mechanisms

    mechanisms = all_mechanisms()
    known = explain.topics(mechanisms)
    if args.topic not in known:
        names = ", ".join(known) or "none yet"
        print(f"mmspec explain: unknown topic {args.topic!r}; known topics: {names}",
              file=sys.stderr)
        return 2
    try:
        options = explain.parse_options(extra)
    except ValueError as exc:
        print(f"mmspec explain: {exc}", file=sys.stderr)
        return 2
    mechanism = known[args.topic]
    try:
        walk_through = mechanism.explainer()
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        print(f"mmspec explain {args.topic}: cannot load {mechanism.explain}: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    try:
        text = explain.call(walk_through, args.topic, args.seed, **options)
    except TypeError as exc:  # an option the walk-through does not take
        print(f"mmspec explain {args.topic}: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _list() -> int:
    from mmspec.mechanisms import all_mechanisms

    mechanisms = all_mechanisms()
    if not mechanisms:
        print("no mechanisms are registered")
        return 0
    width = max(len(m.name) for m in mechanisms)
    for m in mechanisms:
        topics = f"  (explain: {', '.join(m.topic_names)})" if m.explain else ""
        print(f"{m.name:<{width}}  {m.title}{topics}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command != "explain" and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "oracle":
        from mmspec import oracle_report

        return oracle_report.run(args)
    if args.command in ("verify", "conform"):
        return verify.run(args)
    if args.command == "explain":
        return _explain(args, extra)
    if args.command == "list":
        return _list()
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
