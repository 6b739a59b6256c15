"""Argparse pieces of every stage's ``register(sub)``: a command group
(``python -m deepwide GROUP COMMAND ...``) and its commands."""

from __future__ import annotations


def command_group(sub, name: str, help: str):
    """Add the group ``name`` to ``python -m deepwide``'s subparsers ``sub``; returns the
    subparsers its commands go into (one of them is required)."""
    p = sub.add_parser(name, help=help)
    return p.add_subparsers(dest="command", required=True, metavar="COMMAND")


def add_command(cmds, name: str, func, help: str, **kwargs):
    """Add the command ``name`` (it runs ``func(args)``) to a group's subparsers ``cmds``;
    returns its parser, for the command's arguments."""
    p = cmds.add_parser(name, help=help, **kwargs)
    p.set_defaults(func=func)
    return p
