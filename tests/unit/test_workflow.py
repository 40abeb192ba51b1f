"""The example GitHub workflow: valid against GitHub's workflow schema, and every raypipe command
in it parses with the real command line (a renamed option fails here, not in a user's CI)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import typer
import yaml

from raypipe.cli import app

WORKFLOW = Path(__file__).parents[2] / ".github" / "workflows" / "model-ci.yml"


def _raypipe_commands() -> list[list[str]]:
    """Every ``raypipe ...`` command line in the workflow's run steps, split as the shell would."""
    doc = yaml.safe_load(WORKFLOW.read_text())
    commands = []
    for job in doc["jobs"].values():
        for step in job["steps"]:
            script = step.get("run", "").replace("\\\n", " ")
            for line in script.splitlines():
                line = re.sub(r"\$\{\{[^}]*\}\}", "X", line.strip())  # ${{ github.sha }} and the like
                if line.startswith("raypipe "):
                    commands.append(shlex.split(line.replace('"$CONFIG"', "jobs/flights.yaml"))[1:])
                elif " -- python -m raypipe " in line:
                    commands.append(shlex.split(line.split(" -- python -m raypipe ", 1)[1]))
    return commands


def test_the_workflow_is_valid_against_githubs_schema() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_raypipe_command_in_the_workflow_parses() -> None:
    commands = _raypipe_commands()
    assert [c[:1] for c in commands] == [["ci"], ["submit"], ["serve"]], commands
    assert "--dry-run" in commands[0] and "--verdict" in commands[0] and "--ci" in commands[1]
    root = typer.main.get_command(app)
    for args in commands:
        sub = root.get_command(click.Context(root), args[0])
        sub.make_context(args[0], args[1:])  # raises on an unknown option or a missing argument
