"""The ``adaspring`` command: size-backbone, train, tune-variants, profile, search, demo.

Each sub-command is a module of argument parsing plus calls into the libraries it drives
(``adaspring_ros/commands/``, the demo, the benchmarks) and exposes ``cli_main(argv) -> int``;
this file only dispatches, so importing it stays cheap (torch and rclpy load only for the
command that needs them).
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": ("adaspring_ros.commands.train", "train the self-evolutionary backbone"),
    "profile": ("adaspring_ros.commands.profile", "measure every variant -> profile table"),
    "size-backbone": ("adaspring_ros.commands.size_backbone",
                      "pick the backbone's width, depth, resolution for a device"),
    "search": ("adaspring_ros.commands.search", "pick the best variant for a context"),
    "demo": ("adaspring_ros.demo.run", "run the whole ROS pipeline on replayed data"),
    "tune-variants": ("adaspring_ros.commands.tune_variants",
                      "tune each chosen variant's own BN scale/shift (weights stay shared)"),
    "info": ("adaspring_ros.commands.info", "print the model card of a checkpoint or table"),
}


def _usage() -> str:
    lines = ["usage: adaspring <command> [options]", "", "commands:"]
    lines += [f"  {name:<13} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines.append("\n`adaspring <command> --help` for the options of one command.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"adaspring: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.cli_main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
