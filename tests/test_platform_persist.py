"""The built-in platform keeps its gradebook across restarts with ``--persist`` (the
demo's LMS), and starts afresh without it (what the other tests rely on)."""

import json

import httpx
import pytest
from test_platform import running_platform
from test_platform_ags import LINEITEM, Tool, score, stamp, tool_keyset  # noqa: F401

from ananke_hub.testlms.persistence import FILE_NAME


@pytest.fixture
async def http():
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def gradebook(http, url) -> dict:
    (book,) = (await http.get(url + "/gradebook.json")).json()["contexts"]
    return book


async def fill(tool: Tool) -> dict:
    """Line items, scores and a roster change, as a grade sync and the LMS make them."""
    token = await tool.token()
    item = await tool.create_lineitem(token, label="Week 1", scoreMaximum=12.5, tag="ananke")
    assert (await tool.post_score(token, item["id"], score("3", 10, 12.5))).status_code == 204
    homework = tool.url("/ags/ds101/lineitems/homework/lineitem?type_id=1")
    resp = await tool.post_score(token, homework, score("4", 40, 100, comment="Well done"))
    assert resp.status_code == 204
    changed = {**item, "label": "Week 1 (revised)"}
    assert (
        await tool.call("PUT", item["id"], token, json=changed, media=LINEITEM)
    ).status_code == 200
    doc = {"context": "ds101", "user_id": "100", "status": "Inactive"}
    assert (await tool.http.post(tool.url("/_test/roster"), json=doc)).status_code == 200
    return item


async def test_the_gradebook_survives_a_restart(tmp_path, tool_keyset, http):  # noqa: F811
    keys, jwks_url = tool_keyset
    state = tmp_path / "state"
    options = {"flags": ["--persist", "--test-api"], "tool_jwks_url": jwks_url}
    with running_platform(state, **options) as p:
        item = await fill(Tool(p.url, keys, http))
        before = await gradebook(http, p.url)
        url = p.url
    # Stopped right after the last change: the stop itself wrote it.
    assert (state / FILE_NAME).stat().st_mode & 0o077 == 0
    port = int(url.rsplit(":", 1)[1])
    with running_platform(state, port=port, **options) as p:
        assert await gradebook(http, p.url) == before
        tool = Tool(p.url, keys, http)
        token = await tool.token()  # access tokens are not kept: the tool asks again
        assert len(before["scores"]) == 2
        assert any(s["comment"] == "Well done" for s in before["scores"])
        labels = {i["label"] for i in before["lineitems"]}
        assert "Week 1 (revised)" in labels
        (dropped,) = [m for m in before["learners"] if m["user_id"] == "100"]
        assert dropped["status"] == "Inactive"
        # Moodle's rule holds across the restart: an older or equal timestamp is refused.
        again = await tool.post_score(token, item["id"], score("3", 11, 12.5, when=stamp(0)))
        assert again.status_code == 409
        newer = await tool.post_score(token, item["id"], score("3", 11, 12.5, when=stamp(5)))
        assert newer.status_code == 204
        # A new column gets a new id, never one an old column had.
        other = await tool.create_lineitem(token, label="Week 2")
        assert other["id"] != item["id"]


async def test_without_persist_a_restart_starts_afresh(tmp_path, tool_keyset, http):  # noqa: F811
    keys, jwks_url = tool_keyset
    state = tmp_path / "state"
    options = {"flags": ["--test-api"], "tool_jwks_url": jwks_url}
    with running_platform(state, **options) as p:
        await fill(Tool(p.url, keys, http))
    assert not (state / FILE_NAME).exists()
    with running_platform(state, **options) as p:
        assert (await gradebook(http, p.url))["scores"] == []


async def test_an_unreadable_gradebook_file_is_named(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / FILE_NAME).write_text(json.dumps({"format": 99}))
    with pytest.raises(RuntimeError) as failed:
        with running_platform(state, flags=["--persist"]):
            pass
    assert str(state / FILE_NAME) in str(failed.value)
    assert "Move it aside" in str(failed.value)


def test_placed_activities_survive_a_restart():
    """Activities a tool placed by Deep Linking, and their columns, are in the file."""
    from ananke_hub.testlms import demo_data
    from ananke_hub.testlms.persistence import dump, load
    from ananke_hub.testlms.store import PlatformStore

    store = PlatformStore(0)
    column = {"label": "hw1", "scoreMaximum": 10, "resourceId": "nbgrader:hw1", "tag": "t"}
    link = store.add_link("ds101", "hw1", {"ananke_link": "abc"}, column)
    again = PlatformStore(0)
    load(again, json.loads(json.dumps(dump(store))))
    assert again.find_link(link.id) == (demo_data.DS101, link)
    assert dict(link.custom) == {"ananke_link": "abc"}
    item = again.course("ds101").lineitems[link.id]
    assert (item.resource_link_id, item.score_maximum, item.tag) == (link.id, 10, "t")
