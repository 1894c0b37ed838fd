"""``twinmpc twin run|verify``: argument parsing for the twin (the main CLI dispatches here lazily)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from twinmpc.services.twin.loop import MODES, TwinConfig


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="twinmpc twin", description="The traffic twin: signal control on private aggregates.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the closed loop and print the fixed-time / private / oracle table")
    d = TwinConfig()
    run.add_argument("--intersections", type=int, default=d.intersections)
    run.add_argument("--districts", type=int, default=d.districts)
    run.add_argument("--windows", type=int, default=d.windows)
    run.add_argument("--window-seconds", type=int, default=d.window_seconds, help="wall seconds per aggregation window")
    run.add_argument("--period-seconds", type=int, default=d.period_seconds, help="simulated traffic seconds per window")
    run.add_argument("--epsilon", type=float, action="append", help="DP epsilon per window of one private controller "
                     "(repeat; default 0.5, 1 and 4)")
    run.add_argument("--mode", choices=MODES, default=d.mode, help="task mode of the private aggregates (default prio3)")
    run.add_argument("--bits", type=int, default=d.bits, help="range of one cabinet's count per window (2^bits - 1)")
    run.add_argument("--aggregators", type=int, default=d.aggregators)
    run.add_argument("--seed", type=int, default=d.seed)
    run.add_argument("--mqtt", metavar="HOST:PORT", help="publish detector messages to this broker; one edge agent per district")
    run.add_argument("--dashboard", nargs="?", type=int, const=0, metavar="PORT",
                     help="serve the operator dashboard on 127.0.0.1 (a free port unless given)")
    run.add_argument("--workdir", type=Path, help="keep PKI, stores, logs and the decision log here")
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    verify = sub.add_parser("verify", help="check a decision log offline: signatures, chain, and every plan against its rule")
    verify.add_argument("log", type=Path)
    verify.add_argument("--key", type=Path, required=True, help="the twin's public key (twin_signing.pub)")
    return parser


def twin_main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.command == "verify":
        return _verify(args.log, args.key)
    try:
        config = TwinConfig(
            intersections=args.intersections, districts=args.districts, windows=args.windows,
            window_seconds=args.window_seconds, period_seconds=args.period_seconds,
            epsilons=tuple(args.epsilon) if args.epsilon else TwinConfig().epsilons, mode=args.mode, bits=args.bits,
            seed=args.seed, aggregators=args.aggregators, mqtt=args.mqtt,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from twinmpc.services.twin.run import run_twin

    try:
        result = asyncio.run(run_twin(config, workdir=args.workdir, dashboard=args.dashboard, json_out=args.json))
    except KeyboardInterrupt:
        return 130
    return 0 if result["decision_log"]["ok"] and not result["last_error"] else 1


def _verify(log: Path, key_path: Path) -> int:
    from twinmpc.crypto.signing import VerifyKey
    from twinmpc.services.twin.decision_log import verify_decisions

    try:
        key = VerifyKey.load(key_path)
        verdict = verify_decisions(log, key)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(("OK " if verdict.ok else "FAILED ") + f"{log}: {verdict.describe()}")
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    raise SystemExit(twin_main(sys.argv[1:]))
