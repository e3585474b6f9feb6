"""What the lab's "Kore" menu shows: computed in the lab's server from Kore's course list.

The JupyterLab extension ``@ananke/lab-kore`` (source in ``labextension/``, built into
``lab/jupyter/labextensions``) asks ``<server>/ananke/kore`` once when the lab starts
and adds the menu only when ``instructor`` is true. Who is an instructor is decided here,
on the server, from Kore's answer for the lab's owner (:mod:`.kore_client`); the browser
only draws what it is given.

The URLs are for the user's browser, not for the lab's server: the server reaches Kore
on 127.0.0.1 (``ANANKE_KORE_URL``), the browser through the hub's proxy at
``<hub base URL>services/kore/``.
"""

import os
from urllib.parse import urljoin

from ananke_hub.courses.identity import is_course_id
from ananke_hub.roles import Role

from .kore_client import KORE_SERVICE

#: Course roles that get the Kore menu: the people who manage and grade a course.
STAFF_ROLES = frozenset({str(Role.INSTRUCTOR), str(Role.TEACHING_ASSISTANT)})


def browser_kore_url(environ=os.environ) -> str:
    """Kore's address as the lab's user opens it in their browser.

    Absolute when the hub knows its public URL (``c.JupyterHub.public_url``, handed to
    labs as ``JUPYTERHUB_PUBLIC_HUB_URL``), which also covers labs on subdomains;
    otherwise a path on the lab's own origin, where the hub's proxy serves services.
    """
    public_hub = environ.get("JUPYTERHUB_PUBLIC_HUB_URL", "")
    if public_hub:
        # <public>/<base>/hub/ -> <public>/<base>/services/kore/
        return urljoin(public_hub.rstrip("/") + "/", f"../services/{KORE_SERVICE}/")
    base = environ.get("JUPYTERHUB_BASE_URL") or "/"
    return f"{base.rstrip('/')}/services/{KORE_SERVICE}/"


def kore_entry(courses: list, kore_url: str) -> dict:
    """The menu's content from Kore's ``api/courses`` answer (a list of course dicts).

    Only courses the user teaches or assists in are listed, the current one (the course
    of their latest launch) first, each with its page in Kore. Someone who teaches none
    is no instructor and gets an empty list: their lab shows no Kore menu.
    """
    staff = []
    for course in courses:
        if not isinstance(course, dict) or course.get("role") not in STAFF_ROLES:
            continue
        course_id = course.get("course_id")
        if not is_course_id(course_id):
            continue  # never build a URL from something that is not a course id
        staff.append(
            {
                "course_id": course_id,
                "title": str(course.get("title") or course_id),
                "role": course["role"],
                "current": course.get("current") is True,
                "url": f"{kore_url}courses/{course_id}",
            }
        )
    # Kore lists the newest launch first and flags it; sort keeps that order otherwise.
    staff.sort(key=lambda entry: not entry["current"])
    return {"instructor": bool(staff), "kore_url": kore_url, "courses": staff}
