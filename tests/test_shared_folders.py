"""Shared folders: a second file browser in labs (jupyter-fs), set by a hub fragment.

Unit tests of the setting and the lab's environment, then one hub-level test: a student
launches from the built-in LMS and their lab, started by the hub's own spawner, lists
the shared folder through jupyter-fs's API and reads a file from it; a lab of a hub
without shared folders has no jupyter-fs at all.
"""

import asyncio
import json
import os

import httpx
import pytest
from hubtest import admin_stack, hub_api, wait_for_lab
from lti_browser import LTIBrowser
from traitlets import TraitError
from traitlets.config import Config

from ananke_hub.spawner import (
    JUPYTERFS_CONFIG_DIR,
    LAB_CONFIG_DIR,
    SHARED_FOLDERS_ENV,
    AnankeLocalSpawner,
)

ALAN = "u3"  # a learner of the built-in LMS's course


def spawner(folders) -> AnankeLocalSpawner:
    config = Config()
    config.LabEnvironment.shared_folders = folders
    return AnankeLocalSpawner(config=config)


@pytest.mark.parametrize(
    "folders, message",
    [
        ([{"name": "Material"}], "exactly the keys 'name' and 'path'"),
        ([{"name": "M", "path": "/srv/m", "writable": True}], "exactly the keys"),
        ([{"name": "", "path": "/srv/m"}], "non-empty text"),
        ([{"name": "M", "path": "srv/m"}], "absolute path"),
        ([{"name": "M", "path": "/srv/../etc"}], "without '..'"),
        ([{"name": "M", "path": "/srv/m\0"}], "absolute path"),
        ([{"name": "M", "path": "/a"}, {"name": "M", "path": "/b"}], "used twice"),
    ],
)
def test_a_bad_shared_folder_is_refused_with_what_to_do(folders, message):
    with pytest.raises(TraitError, match=message):
        spawner(folders)


def test_labs_get_jupyterfs_only_when_folders_are_set():
    plain = spawner([]).shared_folders_environment()
    assert plain == {}
    env = spawner(
        [{"name": "Course material", "path": "/srv/material/"}]
    ).shared_folders_environment()
    assert json.loads(env[SHARED_FOLDERS_ENV]) == [
        {"name": "Course material", "path": "/srv/material"}
    ]


def test_the_shared_lab_config_hides_jupyterfs_and_the_feature_config_shows_it():
    shared = json.loads((LAB_CONFIG_DIR / "labconfig" / "page_config.json").read_text())
    feature = json.loads((JUPYTERFS_CONFIG_DIR / "labconfig" / "page_config.json").read_text())
    assert shared["disabledExtensions"]["jupyter-fs"] is True
    assert feature["disabledExtensions"]["jupyter-fs"] is False


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    folder = tmp_path_factory.mktemp("material")
    (folder / "syllabus.md").write_text("# Week 1\nRead chapter 1.\n")
    os.chmod(folder, 0o755)
    return folder


async def learner_lab(stack):
    """Launch Alan, wait for his lab, return (lab base URL, a token of his)."""
    async with LTIBrowser() as alan:
        assert (await alan.launch(stack.platform_url, "3", "homework")).status_code == 200
        await wait_for_lab(alan, stack.hub_url, ALAN)
    resp = await hub_api(stack, f"/users/{ALAN}/tokens", method="POST")
    assert resp.status_code == 201, resp.text
    return f"{stack.hub_url}/user/{ALAN}/", resp.json()["token"]


async def resources(http, base: str, token: str) -> httpx.Response:
    # What JupyterLab's jupyter-fs panel posts when the lab opens.
    return await http.post(
        base + "jupyterfs/resources",
        headers={"Authorization": f"token {token}"},
        json={"options": {}, "resources": []},
    )


@pytest.mark.slow
async def test_a_learners_lab_browses_and_reads_the_shared_folder(tmp_path_factory, material):
    extra = {
        "LabEnvironment": {"shared_folders": [{"name": "Course material", "path": str(material)}]},
        "Authenticator": {"admin_users": ["uadmin"]},
    }
    async with admin_stack(tmp_path_factory.mktemp("hub"), extra_config=extra) as stack:
        base, token = await learner_lab(stack)
        async with httpx.AsyncClient(timeout=60) as http:
            listed = await resources(http, base, token)
            assert listed.status_code == 200, listed.text
            [folder] = [r for r in listed.json() if r["name"] == "Course material"]
            assert folder["init"] is True, folder
            assert folder["url"] == material.as_uri()
            drive = folder["drive"]
            # A user's own resource is ignored: only the admin's folders are mounted.
            own = await http.post(
                base + "jupyterfs/resources",
                headers={"Authorization": f"token {token}"},
                json={
                    "options": {},
                    "resources": [
                        {"name": "x", "url": "file:///etc", "type": "fsspec", "auth": "none"}
                    ],
                },
            )
            assert own.status_code == 200
            assert [r["name"] for r in own.json()] == ["Course material"]
            # The file browser's listing and the file itself, through the lab's contents API.
            for _ in range(10):
                listing = await http.get(
                    base + f"api/contents/{drive}:",
                    headers={"Authorization": f"token {token}"},
                )
                if listing.status_code == 200:
                    break
                await asyncio.sleep(1)
            assert listing.status_code == 200, listing.text
            assert [item["name"] for item in listing.json()["content"]] == ["syllabus.md"]
            text = await http.get(
                base + f"api/contents/{drive}:syllabus.md?content=1",
                headers={"Authorization": f"token {token}"},
            )
            assert text.status_code == 200, text.text
            assert "Read chapter 1." in text.json()["content"]
            # The home's own browser still works as before.
            home = await http.get(
                base + "api/contents", headers={"Authorization": f"token {token}"}
            )
            assert home.status_code == 200 and home.json()["type"] == "directory"


@pytest.mark.slow
async def test_without_shared_folders_a_lab_has_no_jupyterfs(tmp_path_factory):
    extra = {"Authenticator": {"admin_users": ["uadmin"]}}
    async with admin_stack(tmp_path_factory.mktemp("hub"), extra_config=extra) as stack:
        base, token = await learner_lab(stack)
        async with httpx.AsyncClient(timeout=60) as http:
            assert (await resources(http, base, token)).status_code == 404
            page = await http.get(base + "lab", headers={"Authorization": f"token {token}"})
            assert page.status_code == 200
            assert '"jupyter-fs"' in page.text.split('"disabledExtensions"')[1].split("]")[0]


def test_the_nbgrader_image_installs_the_jupyterfs_extra():
    import re
    import tomllib
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    extra = tomllib.loads((repo / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["jupyterfs"]
    containerfile = (repo / "images" / "ananke-nbgrader" / "Containerfile").read_text()
    assert re.findall(r"'(jupyter-fs[^']*)'", containerfile) == extra
