"""Small things a newcomer meets first: help text, plurals, set-up messages, the lab's
news prompt, warnings in the feedback log (issue 13, item 8)."""

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from nbconvert.exporters import HTMLExporter

from ananke_hub.cli import build_parser
from ananke_hub.lab import nbgrader_preprocessors
from ananke_hub.spawner import LAB_CONFIG_DIR
from kore.handlers.ui import contents_summary

REPO = Path(__file__).resolve().parent.parent


def all_parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from all_parsers(sub)


def test_cli_help_is_plain_text():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ananke"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "JupyterHub distribution for teaching" in result.stdout
    for parser in all_parsers(build_parser()):
        text = parser.format_help()
        assert "``" not in text, parser.prog


@pytest.mark.parametrize(
    "contents, words",
    [
        ({"assignments": 1, "students": 1}, "1 assignment, 1 student"),
        ({"assignments": ["ps1", "ps2"], "submissions": 0}, "2 assignments, 0 submissions"),
        ({"files": 1}, "1 file"),
    ],
)
def test_backup_contents_use_singular_for_one(contents, words):
    assert contents_summary(contents) == words


def test_setup_says_what_to_install_without_the_venv_module(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy2(REPO / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    # A Python like Debian's without python3-venv: no ensurepip, so `-m venv` fails.
    fake = tmp_path / "python3"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        "  *ensurepip*) echo \"No module named 'ensurepip'\" >&2; exit 1;;\n"
        '  *"-m venv"*) echo "The virtual environment was not created successfully" >&2; exit 1;;\n'
        "esac\n"
        f'exec {sys.executable} "$@"\n'
    )
    fake.chmod(0o755)
    result = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "setup.sh")],
        env={**os.environ, "PYTHON": str(fake)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "apt-get install python3-venv" in result.stderr
    assert not (tmp_path / ".venv").exists()


@pytest.mark.parametrize("name", ["ClearHiddenTests", "Execute"])
def test_feedback_preprocessors_take_the_exporters_config_without_warning(name, caplog):
    """GenerateFeedback's HTMLExporter configures display_data_priority for every
    preprocessor; nbgrader's own classes warn about it in every feedback log."""
    from nbgrader import preprocessors as upstream

    config = HTMLExporter().default_config
    with caplog.at_level(logging.WARNING):
        getattr(upstream, name)(config=config)
    assert "display_data_priority" in caplog.text  # what the course's log showed
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        getattr(nbgrader_preprocessors, name)(config=config)
    assert "display_data_priority" not in caplog.text


def test_labs_do_not_offer_jupyter_news():
    """The lab's page config, read as JupyterLab reads it with the spawners' config path,
    disables the news and update announcements (and their "official Jupyter news?" prompt)."""
    code = (
        "import json; from jupyterlab_server.config import get_page_config; "
        "print(json.dumps(get_page_config([], logger=None)['disabledExtensions']))"
    )
    env = {**os.environ, "JUPYTER_CONFIG_PATH": str(LAB_CONFIG_DIR)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert "@jupyterlab/apputils-extension:announcements" in json.loads(result.stdout)
