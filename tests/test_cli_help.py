"""Every ``worldfm-env`` option has help text and shows its default; each subcommand's usage line is its own."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from worldfm_env.cli import build_parser, main


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_option_of_every_subcommand_has_help():
    parser = build_parser()
    subs = _subparsers(parser)
    assert {"demo", "rollout", "render", "train", "info"} <= set(subs)
    missing = []
    for name, sub in subs.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if not (action.help or "").strip():
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"options without help: {missing}"


@pytest.mark.parametrize("command", ["demo", "rollout", "render"])
def test_help_shows_defaults(capsys, command):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert text.startswith(f"usage: worldfm-env {command}")
    sub = _subparsers(build_parser())[command]
    for action in sub._actions:
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            assert f"(default: {action.default})" in text, (command, action.option_strings)


@pytest.mark.parametrize("stage", ["stage2", "stage3"])
def test_train_usage_line_is_its_own(stage):
    # A subprocess: the training parsers exit through argparse and print to the real stdout.
    result = subprocess.run(
        [sys.executable, "-m", "worldfm_env.cli", "train", stage, "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: worldfm-env train {stage}"), result.stdout[:200]
