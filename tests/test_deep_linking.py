"""Hub-level: LTI Deep Linking 2.0 with the built-in LMS (issue 17, part 3).

An instructor chooses two nbgrader assignments on Kore's picker from the LMS's "Select
content"; the LMS gets two activities with their grade columns; a student launches both
and lands in the same course; the grade sync puts each score in its activity's column.
Refusals: a student's content selection, a picker without its ticket or with a changed,
replayed or expired one, tampered responses, forged custom parameters, two items where
the LMS accepts one. In a browser, in the LMS's dialog: tests/test_framed_lti.py.
"""

import asyncio
import re
import time
import uuid

import httpx
import jwt
import pytest
from hubtest import admin_stack, callback, forge, hub_api, initiate, person
from lti_browser import LTIBrowser, parse_forms
from sqlalchemy import select
from test_grade_sync import add_assignment, submit

from ananke_hub import lti_spec
from ananke_hub.courses.deeplink import LINK_PARAMETER, link_tag
from ananke_hub.courses.identity import course_id_for
from ananke_hub.courses.layout import CourseLayout
from ananke_hub.courses.models import Course, DeepLink, DeepLinkRequest
from ananke_hub.courses.registry import CourseRegistry
from ananke_hub.keys import KeyStore
from ananke_hub.testlms.demo import DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID

pytestmark = pytest.mark.slow

LEARNER = "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"


@pytest.fixture(scope="module")
async def stack(tmp_path_factory):
    async with admin_stack(tmp_path_factory.mktemp("hub"), platform_args=["--test-api"]) as s:
        yield s


def registry(stack) -> CourseRegistry:
    return CourseRegistry(url=f"sqlite:///{stack.layout.root / 'courses.sqlite'}")


def rows(stack, model) -> list:
    reg = registry(stack)
    try:
        with reg.session() as session:
            return list(session.scalars(select(model)))
    finally:
        reg.close()


def layout(stack) -> CourseLayout:
    return CourseLayout(
        homes_root=str(stack.layout.local_homes), exchange_root=str(stack.layout.root / "exchange")
    )


def homework(stack) -> str:
    return course_id_for(stack.platform_url, DEMO_CLIENT_ID, DEMO_DEPLOYMENT_ID, "homework")


async def select_content(browser, stack, sub, *, accept_multiple=True, stop_before=None):
    """Click "Select content" on the LMS's launch page as ``sub``; follow to the end."""
    page = await browser.get(stack.platform_url + "/")
    (form,) = [
        f
        for f in parse_forms(page)
        if f.action.endswith("/deeplink") and f.fields.get("user") == sub
    ]
    fields = {"accept_multiple": "true" if accept_multiple else "false"}
    resp = await browser.submit_form(page, fields, form=form, stop_before=stop_before)
    return await browser.follow_auto_submits(resp, stop_before=stop_before)


async def choose(browser, picker: httpx.Response, items: list[str]) -> httpx.Response:
    """Submit the picker with these items ticked; follow the answer back to the LMS."""
    (form,) = parse_forms(picker)
    fields = {"ticket": form.fields["ticket"], "answer": "1", "item": items}
    resp = await browser.post(str(picker.url), fields)
    return await browser.follow_auto_submits(resp)


def added_links(page: httpx.Response) -> list[str]:
    return re.findall(r'data-link="([^"]+)"', page.text)


async def lms_gradebook(stack) -> dict:
    async with httpx.AsyncClient() as http:
        book = (await http.get(f"{stack.platform_url}/gradebook.json")).json()
    (ds101,) = [c for c in book["contexts"] if c["id"] == "ds101"]
    return ds101


async def test_a_students_content_selection_is_refused_and_creates_nothing(stack):
    async with LTIBrowser() as browser:
        resp = await select_content(browser, stack, "4")  # Émilie, a learner
    assert resp.status_code == 403, resp.text[:500]
    assert "Only teachers of this LMS course" in resp.text and "Nothing was created" in resp.text
    assert (await hub_api(stack, "/users/u4")).status_code == 404
    assert rows(stack, DeepLinkRequest) == [] and rows(stack, Course) == []


async def test_instructor_places_two_assignments_and_grades_reach_their_columns(stack):
    cid = homework(stack)
    async with LTIBrowser() as ada:
        assert (await ada.launch(stack.platform_url, "2", "homework")).status_code == 200
        add_assignment(layout(stack), cid, "hw1", 6, 4)
        add_assignment(layout(stack), cid, "hw2", 5)
        picker = await select_content(ada, stack, "2")
        assert picker.status_code == 200, picker.text[:500]
        assert "/services/kore/deeplink/" in str(picker.url)
        assert 'type="checkbox"' in picker.text and "A new course activity" in picker.text
        done = await choose(ada, picker, [f"{cid}/hw1", f"{cid}/hw2"])
    assert done.status_code == 200 and str(done.url).startswith(stack.platform_url), done.text
    links = added_links(done)
    assert len(links) == 2

    # The LMS made one column per activity, bound to it, as the picker asked.
    items = {i.get("resourceLinkId"): i for i in (await lms_gradebook(stack))["lineitems"]}
    assert [items[link]["label"] for link in links] == ["hw1", "hw2"]
    assert [items[link]["scoreMaximum"] for link in links] == [10, 5]
    assert {items[link]["tag"] for link in links} == {link_tag(cid)}
    assert [items[link]["resourceId"] for link in links] == ["nbgrader:hw1", "nbgrader:hw2"]

    # A student opens both activities: the same course, no new one per activity.
    for link in links:
        async with LTIBrowser() as alan:
            assert (await alan.launch(stack.platform_url, "3", link)).status_code == 200
    assert {c.id for c in rows(stack, Course)} == {cid}
    u3 = (await hub_api(stack, "/users/u3")).json()
    assert f"nbgrader-{cid}" in u3["groups"]

    submit(layout(stack), cid, "u3", "hw1", 5, 3)
    submit(layout(stack), cid, "u3", "hw2", 4)
    resp = await hub_api(stack, "/users/u2/tokens", method="POST")
    token = resp.json()["token"]
    async with httpx.AsyncClient(timeout=30) as http:
        api = f"{stack.hub_url}/services/kore/api/courses/{cid}/grades/sync"
        headers = {"Authorization": f"token {token}"}
        started = await http.post(api, headers=headers, json={"missing": "zero"})
        assert started.status_code == 202, started.text
        for _ in range(120):
            run = (await http.get(f"{api}/{started.json()['run_id']}", headers=headers)).json()
            if run["state"] != "running":
                break
            await asyncio.sleep(0.5)
    assert run["state"] == "finished", run
    book = await lms_gradebook(stack)
    by_item = {s["lineitem"]: s["scoreGiven"] for s in book["scores"] if s["userId"] == "3"}
    assert by_item[items[links[0]]["id"]] == 8
    assert by_item[items[links[1]]["id"]] == 4
    # Kore made no second column of its own for the placed assignments.
    assert sorted(i["label"] for i in book["lineitems"] if i["label"] in ("hw1", "hw2")) == [
        "hw1",
        "hw2",
    ]


async def continue_page(stack, browser) -> tuple[str, str]:
    """Ada's content selection up to the hub's page that posts the ticket to Kore:
    the picker's URL and the ticket."""
    await browser.launch(stack.platform_url, "2", "homework")
    page = await select_content(
        browser, stack, "2", stop_before=f"{stack.hub_url}/services/kore/deeplink/"
    )
    assert page.status_code == 200, page.text[:300]
    (form,) = parse_forms(page)
    assert form.action.startswith(f"{stack.hub_url}/services/kore/deeplink/"), form.action
    return form.action, form.fields["ticket"]


async def test_the_picker_opens_only_with_its_ticket(stack):
    async with LTIBrowser() as ada:
        picker_url, ticket = await continue_page(stack, ada)
        # Ada herself, logged in to the hub, without the ticket: refused.
        assert (await ada.get(picker_url)).status_code == 403
        assert (await ada.post(picker_url, {})).status_code == 403
    # The ticket is not in the URL, and the registry keeps only its hash.
    assert ticket not in picker_url
    assert all(ticket not in (r.id, r.data or "") for r in rows(stack, DeepLinkRequest))
    async with LTIBrowser() as alan:
        assert (await alan.launch(stack.platform_url, "3", "homework")).status_code == 200
        for forged in (ticket[:-1] + ("A" if ticket[-1] != "A" else "B"), "x" * 43):
            resp = await alan.post(picker_url, {"ticket": forged})
            assert resp.status_code == 404 and "already answered or has expired" in resp.text
            assert "hw1" not in resp.text
        # Another request's id with this ticket: refused too.
        other = picker_url[:-1] + ("0" if picker_url[-1] != "0" else "1")
        assert (await alan.post(other, {"ticket": ticket})).status_code == 404


async def test_a_ticket_answers_once_and_expires(stack):
    cid = homework(stack)
    async with LTIBrowser() as ada:
        picker_url, ticket = await continue_page(stack, ada)
        picker = await ada.post(picker_url, {"ticket": ticket})
        assert picker.status_code == 200 and "hw1" in picker.text
        done = await choose(ada, picker, [f"{cid}/hw1"])
        assert done.status_code == 200 and len(added_links(done)) == 1
        before = len(rows(stack, DeepLink))
        replay = await ada.post(picker_url, {"ticket": ticket, "answer": "1", "item": "new"})
        assert replay.status_code == 404 and "already answered" in replay.text
        assert (await ada.post(picker_url, {"ticket": ticket})).status_code == 404
        assert len(rows(stack, DeepLink)) == before

        picker_url, ticket = await continue_page(stack, ada)
        reg = registry(stack)
        try:
            with reg.session() as session, session.begin():
                request = session.get(DeepLinkRequest, picker_url.rsplit("/", 1)[1])
                request.expires_at = request.expires_at.replace(year=2000)
        finally:
            reg.close()
        expired = await ada.post(picker_url, {"ticket": ticket, "answer": "1", "item": "new"})
        assert expired.status_code == 404 and "has expired" in expired.text
        assert len(rows(stack, DeepLink)) == before


async def test_accept_multiple_false_gets_one_item(stack):
    cid = homework(stack)
    before = len(rows(stack, DeepLink))
    async with LTIBrowser() as ada:
        await ada.launch(stack.platform_url, "2", "homework")
        picker = await select_content(ada, stack, "2", accept_multiple=False)
        assert 'type="radio"' in picker.text and 'type="checkbox"' not in picker.text
        two = await choose(ada, picker, [f"{cid}/hw1", f"{cid}/hw2"])
        assert two.status_code == 400 and "accepts one item" in two.text
        assert len(rows(stack, DeepLink)) == before
        done = await choose(ada, picker, [f"{cid}/hw2"])
    assert done.status_code == 200 and len(added_links(done)) == 1


async def open_request(stack) -> str:
    """A content selection the LMS opened for Ada: its `data`."""
    async with LTIBrowser() as ada:
        page = await ada.get(stack.platform_url + "/")
        (form,) = [
            f for f in parse_forms(page) if f.action.endswith("/deeplink") and f.fields["user"] == "2"
        ]
        resp = await ada.submit_form(page, form=form, stop_before=stack.hub_url)
    (autopost,) = parse_forms(resp)
    return autopost.fields["lti_message_hint"].removeprefix("deeplink:")


async def lms_activities(http, stack) -> set[str]:
    page = await http.get(stack.platform_url + "/")
    return set(re.findall(r'name="link" value="([^"]+)"', page.text))


def response_claims(stack, echoed, **changes) -> dict:
    now = int(time.time())
    claims = {
        "iss": DEMO_CLIENT_ID,
        "aud": stack.platform_url,
        "iat": now,
        "exp": now + 300,
        "nonce": uuid.uuid4().hex,
        lti_spec.DEPLOYMENT_ID: DEMO_DEPLOYMENT_ID,
        lti_spec.MESSAGE_TYPE: "LtiDeepLinkingResponse",
        lti_spec.VERSION: "1.3.0",
        lti_spec.DL_DATA: echoed,
        lti_spec.DL_CONTENT_ITEMS: [{"type": "ltiResourceLink", "title": "Forged"}],
    }
    for name, value in changes.items():
        name = {"deployment": lti_spec.DEPLOYMENT_ID, "echo": lti_spec.DL_DATA}.get(name, name)
        if value is None:
            claims.pop(name)
        else:
            claims[name] = value
    return claims


async def test_the_lms_refuses_tampered_responses(stack, tmp_path):
    kore_key = KeyStore(stack.layout.kore_keys).signing_key()
    attacker = KeyStore(tmp_path / "attacker").ensure()
    data = await open_request(stack)
    cases = [
        ("bad signature", response_claims(stack, data), attacker, "signature does not verify"),
        ("wrong aud", response_claims(stack, data, aud="https://other.example"), kore_key, "aud"),
        ("wrong iss", response_claims(stack, data, iss="someone"), kore_key, "iss"),
        ("no data echo", response_claims(stack, data, echo=None), kore_key, "data"),
        ("other data", response_claims(stack, data, echo="made-up"), kore_key, "data"),
        ("deployment", response_claims(stack, data, deployment="9"), kore_key, "deployment_id"),
    ]
    async with httpx.AsyncClient(timeout=30) as http:
        activities_before = await lms_activities(http, stack)
        for case, claims, key, words in cases:
            token = jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": kore_key.kid})
            resp = await http.post(f"{stack.platform_url}/deeplink/return", data={"JWT": token})
            assert resp.status_code == 400, (case, resp.text)
            assert words in resp.text, (case, resp.text)
        assert await lms_activities(http, stack) == activities_before  # nothing added
        # The control: the same request, answered properly, is taken.
        good = jwt.encode(
            response_claims(stack, data), kore_key.private_key, algorithm="RS256", headers={"kid": kore_key.kid}
        )
        resp = await http.post(f"{stack.platform_url}/deeplink/return", data={"JWT": good})
        assert resp.status_code == 200 and "Forged" in resp.text


async def test_forged_link_parameters_attach_nobody(stack):
    (link, *_) = rows(stack, DeepLink)
    other_context = {"id": "ds999", "label": "DS999", "title": "Another course"}
    cases = [
        ("unknown link", {lti_spec.CUSTOM: {LINK_PARAMETER: "made-up-link-id-000"}}),
        # a real link id, typed into an activity of another LMS course
        ("other course", {lti_spec.CUSTOM: {LINK_PARAMETER: link.id}, lti_spec.CONTEXT: other_context}),
    ]
    for n, (case, overrides) in enumerate(cases):
        sub = f"97{n}"
        overrides = {
            **overrides,
            lti_spec.ROLES: [LEARNER],
            lti_spec.RESOURCE_LINK: {"id": f"forged-{n}", "title": "Forged"},
        }
        async with LTIBrowser() as browser:
            state, nonce, _ = await initiate(browser, stack, sub)
            resp = await callback(browser, stack, forge(stack, nonce, person(sub), overrides=overrides), state)
        assert resp.status_code == 403, (case, resp.text[:500])
        assert "placed no such activity" in resp.text, case
        assert (await hub_api(stack, f"/users/u{sub}")).status_code == 404, case
    assert {c.id for c in rows(stack, Course)} == {homework(stack)}
