"""Tasks: CRUD, validation, ownership, ETags, filters, sorts and keyset pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import quote

import pytest
from bson import ObjectId

from taskapi.extensions import get_db
from tests.helpers import assert_problem, bearer, login, register

TASKS = "/api/v1/tasks"


@pytest.fixture
def headers(user_tokens):
    return bearer(user_tokens["access_token"])


@pytest.fixture
def other_headers(client):
    register(client, "bob@example.com")
    return bearer(login(client, "bob@example.com")["access_token"])


def create(client, headers, **fields):
    response = client.post(TASKS, json={"title": "A task", **fields}, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def q(value: str) -> str:
    return quote(value, safe="")


# --- create ---------------------------------------------------------------------------------

def test_create_returns_task_location_and_etag(client, headers):
    response = client.post(TASKS, json={"title": "  Buy milk  ", "tags": ["Home", "home", "errands"],
                                        "due_at": "2026-12-01T10:00:00+02:00", "priority": "high"},
                           headers=headers)
    assert response.status_code == 201
    task = response.get_json()
    assert set(task) == {"id", "title", "description", "status", "priority", "due_at", "tags", "completed_at",
                         "remind_at", "reminded_at",
                         "created_at", "updated_at", "version"}
    assert task["title"] == "Buy milk" and task["tags"] == ["home", "errands"]
    assert task["due_at"] == "2026-12-01T08:00:00Z"
    assert (task["status"], task["priority"], task["description"], task["version"]) == ("todo", "high", "", 1)
    assert task["completed_at"] is None and task["created_at"] == task["updated_at"] and task["created_at"].endswith("Z")
    assert response.headers["Location"] == f"/api/v1/tasks/{task['id']}"
    assert response.headers["ETag"] == '"v1"'
    assert response.headers["Cache-Control"] == "no-store"


def test_create_done_sets_completed_at(client, headers):
    task = create(client, headers, status="done")
    assert task["completed_at"] is not None and task["completed_at"] == task["created_at"]


def test_twenty_tags_are_lower_cased_and_merged(client, headers):
    tags = [f"t{i}" for i in range(17)] + ["T1", "t2", "T17"]
    assert create(client, headers, tags=tags)["tags"] == [f"t{i}" for i in range(18)]


@pytest.mark.parametrize(
    "payload, field",
    [
        ({}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"title": None}, "title"),
        ({"title": 5}, "title"),
        ({"title": {"$ne": None}}, "title"),
        ({"title": "tab\tinside"}, "title"),
        ({"title": "ok", "description": "d" * 5001}, "description"),
        ({"title": "ok", "description": None}, "description"),
        ({"title": "ok", "status": "finished"}, "status"),
        ({"title": "ok", "status": ["todo"]}, "status"),
        ({"title": "ok", "priority": "critical"}, "priority"),
        ({"title": "ok", "due_at": "2026-12-01T10:00:00"}, "due_at"),
        ({"title": "ok", "due_at": "tomorrow"}, "due_at"),
        ({"title": "ok", "due_at": 1796010851}, "due_at"),
        ({"title": "ok", "due_at": "1800-01-01T00:00:00Z"}, "due_at"),
        ({"title": "ok", "due_at": "1969-12-31T23:59:59Z"}, "due_at"),
        ({"title": "ok", "due_at": "3000-01-01T00:00:00Z"}, "due_at"),
        ({"title": "ok", "tags": "home"}, "tags"),
        ({"title": "ok", "tags": ["two words"]}, "tags.0"),
        ({"title": "ok", "tags": ["ok", "x" * 33]}, "tags.1"),
        ({"title": "ok", "tags": [""]}, "tags.0"),
        ({"title": "ok", "tags": [f"t{i}" for i in range(21)]}, "tags"),
        ({"title": "ok", "tags": ["a"] * 21}, "tags"),
        ({"title": "ok", "tags": [" padded "]}, "tags.0"),
        ({"title": "1\u001f"}, "title"),
        ({"title": "\ufeff\u3000 "}, "title"),
        ({"title": "\u200b\u2060\u3164\u00ad\u202e"}, "title"),  # only invisible characters
        ({"title": "\u200b"}, "title"),
        ({"title": "\u115f\u1160\u2800\ufe0f"}, "title"),
        ({"title": " " + "x" * 200}, "title"),
        ({"title": "ok", "tags": [{"$gt": ""}]}, "tags.0"),
        ({"title": "ok", "id": str(ObjectId())}, "id"),
        ({"title": "ok", "owner": str(ObjectId())}, "owner"),
        ({"title": "ok", "version": 7}, "version"),
        ({"title": "ok", "created_at": "2020-01-01T00:00:00Z"}, "created_at"),
        ({"title": "ok", "updated_at": "2020-01-01T00:00:00Z"}, "updated_at"),
        ({"title": "ok", "completed_at": "2020-01-01T00:00:00Z"}, "completed_at"),
        ({"title": "ok", "colour": "red"}, "colour"),
        ({"title": "ok", "__raw__": {"owner": 1}}, "__raw__"),
        ({"title": "ok", "$set": {"owner": 1}}, "$set"),
    ],
)
def test_create_validation(client, headers, payload, field):
    body = assert_problem(client.post(TASKS, json=payload, headers=headers), 422)
    assert field in body["errors"], body
    assert get_db().tasks.count_documents({}) == 0


def test_tasks_need_a_token(client):
    for method, url in (("get", TASKS), ("post", TASKS), ("get", f"{TASKS}/{ObjectId()}"),
                        ("patch", f"{TASKS}/{ObjectId()}"), ("delete", f"{TASKS}/{ObjectId()}")):
        response = getattr(client, method)(url, **({"json": {"title": "x"}} if method in ("post", "patch") else {}))
        assert_problem(response, 401)


# --- read, ETags, ownership -------------------------------------------------------------------

def test_get_with_etag_and_conditional_get(client, headers):
    task = create(client, headers)
    url = f"{TASKS}/{task['id']}"
    response = client.get(url, headers=headers)
    assert response.status_code == 200 and response.get_json() == task and response.headers["ETag"] == '"v1"'
    for tag in ('"v1"', 'W/"v1"', '"v0", "v1"', "*"):
        unchanged = client.get(url, headers={**headers, "If-None-Match": tag})
        assert unchanged.status_code == 304 and unchanged.get_data() == b"" and unchanged.headers["ETag"] == '"v1"'
    assert client.get(url, headers={**headers, "If-None-Match": '"v2"'}).status_code == 200


def test_another_users_task_is_indistinguishable_from_a_missing_one(client, headers, other_headers):
    task = create(client, headers, title="Private")
    url = f"{TASKS}/{task['id']}"
    answers = []
    for response in (client.get(url, headers=other_headers),
                     client.patch(url, json={"title": "mine now"}, headers=other_headers),
                     client.put(url, json={"title": "mine now"}, headers=other_headers),
                     client.delete(url, headers=other_headers),
                     client.delete(url, headers={**other_headers, "If-Match": "*"}),
                     client.get(f"{TASKS}/{ObjectId()}", headers=other_headers),
                     client.get(f"{TASKS}/not-an-id", headers=other_headers),
                     client.get(f"{TASKS}/{'0' * 25}", headers=other_headers)):
        body = assert_problem(response, 404)
        answers.append(body["detail"])
    assert len(set(answers)) == 1
    assert client.get(f"{TASKS}?q=Private", headers=other_headers).get_json()["items"] == []
    assert client.get(url, headers=headers).get_json() == task  # untouched


# --- update -------------------------------------------------------------------------------------

def test_patch_changes_only_given_fields_and_counts_versions(client, headers):
    task = create(client, headers, title="Original", tags=["a"], priority="low")
    url = f"{TASKS}/{task['id']}"
    response = client.patch(url, json={"priority": "urgent"}, headers=headers)
    assert response.status_code == 200 and response.headers["ETag"] == '"v2"'
    patched = response.get_json()
    assert (patched["title"], patched["tags"], patched["priority"], patched["version"]) == ("Original", ["a"], "urgent", 2)
    assert patched["updated_at"] >= task["updated_at"] and patched["created_at"] == task["created_at"]
    same = client.patch(url, json={"priority": "urgent", "title": " Original "}, headers=headers)
    assert same.get_json()["version"] == 2  # nothing changed, nothing written
    assert client.patch(url, json={}, headers=headers).get_json()["version"] == 2


def test_completed_at_follows_status(client, headers):
    task = create(client, headers)
    url = f"{TASKS}/{task['id']}"
    done = client.patch(url, json={"status": "done"}, headers=headers).get_json()
    assert done["completed_at"] is not None
    still = client.patch(url, json={"status": "done", "title": "Renamed"}, headers=headers).get_json()
    assert still["completed_at"] == done["completed_at"]
    reopened = client.patch(url, json={"status": "in_progress"}, headers=headers).get_json()
    assert reopened["completed_at"] is None and reopened["version"] == 4


def test_patch_validation_and_clearing_due_at(client, headers):
    task = create(client, headers, due_at="2030-01-01T00:00:00Z")
    url = f"{TASKS}/{task['id']}"
    for payload in ({"title": None}, {"title": ""}, {"status": "nope"}, {"version": 9}, {"owner": "x"}, {"x": 1}):
        assert_problem(client.patch(url, json=payload, headers=headers), 422)
    assert client.patch(url, json={"due_at": None}, headers=headers).get_json()["due_at"] is None


def test_if_match_on_patch(client, headers):
    task = create(client, headers)
    url = f"{TASKS}/{task['id']}"
    assert_problem(client.patch(url, json={"title": "x"}, headers={**headers, "If-Match": '"v9"'}), 412)
    assert_problem(client.patch(url, json={"title": "x"}, headers={**headers, "If-Match": 'W/"v9"'}), 412)
    ok = client.patch(url, json={"title": "x"}, headers={**headers, "If-Match": '"v1"'})
    assert ok.status_code == 200 and ok.headers["ETag"] == '"v2"'
    assert_problem(client.patch(url, json={"title": "y"}, headers={**headers, "If-Match": '"v1"'}), 412)
    # The weak form of the current tag matches: what a client gets through a compressing proxy.
    weak = client.patch(url, json={"title": "x2"}, headers={**headers, "If-Match": 'W/"v2"'})
    assert weak.status_code == 200 and weak.headers["ETag"] == '"v3"'
    assert_problem(client.patch(url, json={"title": "y"}, headers={**headers, "If-Match": 'W/"v2"'}), 412)
    assert client.patch(url, json={"title": "y"}, headers={**headers, "If-Match": "*"}).status_code == 200
    assert client.get(url, headers=headers).get_json()["title"] == "y"


def test_put_replaces_and_resets_omitted_fields(client, headers):
    task = create(client, headers, description="d", status="done", priority="urgent",
                  due_at="2030-01-01T00:00:00Z", tags=["x"])
    url = f"{TASKS}/{task['id']}"
    assert "title" in assert_problem(client.put(url, json={"description": "only"}, headers=headers), 422)["errors"]
    assert_problem(client.put(url, json={"title": "t"}, headers={**headers, "If-Match": '"v5"'}), 412)
    replaced = client.put(url, json={"title": "Replaced"}, headers={**headers, "If-Match": '"v1"'})
    assert replaced.status_code == 200
    body = replaced.get_json()
    assert (body["title"], body["description"], body["status"], body["priority"], body["due_at"], body["tags"],
            body["completed_at"], body["version"]) == ("Replaced", "", "todo", "medium", None, [], None, 2)


def test_delete_with_and_without_if_match(client, headers):
    first, second = create(client, headers), create(client, headers)
    url = f"{TASKS}/{first['id']}"
    assert_problem(client.delete(url, headers={**headers, "If-Match": '"v2"'}), 412)
    assert client.get(url, headers=headers).status_code == 200
    response = client.delete(url, headers={**headers, "If-Match": '"v1"'})
    assert response.status_code == 204 and response.get_data() == b""
    assert_problem(client.get(url, headers=headers), 404)
    assert_problem(client.delete(url, headers=headers), 404)
    assert client.delete(f"{TASKS}/{second['id']}", headers=headers).status_code == 204


# --- list: filters --------------------------------------------------------------------------------

@pytest.fixture
def catalogue(client, headers):
    """Tasks with known statuses, priorities, tags and due dates around now."""
    now = datetime.now(UTC).replace(microsecond=0)
    specs = {
        "past_todo": dict(status="todo", priority="high", tags=["work"], due_at=iso(now - timedelta(days=2))),
        "past_done": dict(status="done", priority="low", tags=["home"], due_at=iso(now - timedelta(days=1))),
        "soon_progress": dict(status="in_progress", priority="urgent", tags=["work", "home"],
                              due_at=iso(now + timedelta(hours=5))),
        "later_todo": dict(status="todo", priority="medium", tags=[], due_at=iso(now + timedelta(days=10)),
                           description="Call the (plumber) about the sink.*"),
        "undated_todo": dict(status="todo", priority="low", tags=["errands"], title="Buy MILK and eggs"),
        "undated_done": dict(status="done", priority="urgent", tags=["work"]),
    }
    ids = {}
    for name, fields in specs.items():
        fields.setdefault("title", name.replace("_", " "))
        ids[create(client, headers, **fields)["id"]] = name
    return ids, now


def names(client, headers, query: str, catalogue) -> list[str]:
    response = client.get(f"{TASKS}?{query}", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return [catalogue[0][item["id"]] for item in response.get_json()["items"]]


@pytest.mark.parametrize(
    "query, expected",
    [
        ("status=todo", {"past_todo", "later_todo", "undated_todo"}),
        ("status=todo,in_progress", {"past_todo", "later_todo", "undated_todo", "soon_progress"}),
        ("priority=urgent", {"soon_progress", "undated_done"}),
        ("priority=low,high", {"past_todo", "past_done", "undated_todo"}),
        ("tag=work", {"past_todo", "soon_progress", "undated_done"}),
        ("tag=HOME,errands", {"past_done", "soon_progress", "undated_todo"}),
        ("overdue=true", {"past_todo"}),
        ("overdue=false", {"past_done", "soon_progress", "later_todo", "undated_todo", "undated_done"}),
        ("q=milk", {"undated_todo"}),
        ("q=PLUMBER", {"later_todo"}),
        ("q=" + q("(plumber)"), {"later_todo"}),
        ("q=" + q("sink.*"), {"later_todo"}),
        ("q=" + q(".*"), {"later_todo"}),  # a literal ".*", not a regex
        ("q=" + q("s.nk"), set()),
        ("q=" + q('{"$where": "1"}'), set()),
        ("status=todo&tag=work", {"past_todo"}),
        ("status=done&overdue=true", set()),
        ("tag=work&priority=urgent&status=done", {"undated_done"}),
    ],
)
def test_filters(client, headers, catalogue, query, expected):
    assert set(names(client, headers, query, catalogue)) == expected


def test_due_ranges_are_inclusive_after_exclusive_before(client, headers, catalogue):
    ids, now = catalogue
    soon = iso(now + timedelta(hours=5))
    assert set(names(client, headers, f"due_after={q(soon)}", catalogue)) == {"soon_progress", "later_todo"}
    assert set(names(client, headers, f"due_before={q(soon)}", catalogue)) == {"past_todo", "past_done"}
    window = f"due_after={q(iso(now - timedelta(days=1)))}&due_before={q(iso(now + timedelta(days=10)))}"
    assert set(names(client, headers, window, catalogue)) == {"past_done", "soon_progress"}
    offset = (now + timedelta(hours=5)).astimezone(timezone(timedelta(hours=-3))).isoformat()
    assert set(names(client, headers, f"due_after={q(offset)}", catalogue)) == {"soon_progress", "later_todo"}


@pytest.mark.parametrize(
    "sort, expected",
    [
        # Ties (no due date; equal rank) are broken by id in the sort's direction; ids follow creation order.
        ("due_at", ["past_todo", "past_done", "soon_progress", "later_todo", "undated_todo", "undated_done"]),
        ("-due_at", ["later_todo", "soon_progress", "past_done", "past_todo", "undated_done", "undated_todo"]),
        ("priority", ["past_done", "undated_todo", "later_todo", "past_todo", "soon_progress", "undated_done"]),
        ("-priority", ["undated_done", "soon_progress", "past_todo", "later_todo", "undated_todo", "past_done"]),
        ("created_at", ["past_todo", "past_done", "soon_progress", "later_todo", "undated_todo", "undated_done"]),
        ("-created_at", ["undated_done", "undated_todo", "later_todo", "soon_progress", "past_done", "past_todo"]),
    ],
)
def test_sorts(client, headers, catalogue, sort, expected):
    assert names(client, headers, f"sort={sort}", catalogue) == expected


def test_default_sort_is_newest_first(client, headers, catalogue):
    assert names(client, headers, "", catalogue) == names(client, headers, "sort=-created_at", catalogue)


def test_updated_at_sort_follows_changes(client, headers, catalogue):
    ids, _ = catalogue
    by_name = {name: i for i, name in ids.items()}
    client.patch(f"{TASKS}/{by_name['past_todo']}", json={"title": "touched"}, headers=headers)
    assert names(client, headers, "sort=-updated_at&limit=1", catalogue) == ["past_todo"]
    assert names(client, headers, "sort=updated_at", catalogue)[-1] == "past_todo"


@pytest.mark.parametrize(
    "query, field",
    [("limit=0", "limit"), ("limit=101", "limit"), ("limit=ten", "limit"), ("limit=", "limit"),
     ("sort=title", "sort"), ("sort=-", "sort"), ("status=bogus", "status"), ("status=todo,bogus", "status"),
     ("priority=9", "priority"), ("tag=two%20words", "tag"), ("overdue=yes", "overdue"), ("overdue=1", "overdue"),
     ("due_before=yesterday", "due_before"), ("due_after=2026-12-01T00:00:00", "due_after"),
     ("q=" + "x" * 101, "q"), ("q=", "q"), ("page=2", "page"), ("offset=40", "offset"),
     ("status[$ne]=x", "status[$ne]"), ("__raw__=%7B%7D", "__raw__"), ("owner=someone", "owner")],
)
def test_list_rejects_bad_query_parameters(client, headers, query, field):
    body = assert_problem(client.get(f"{TASKS}?{query}", headers=headers), 422)
    assert field in body["errors"], body


def test_list_page_shape_limit_and_link(client, headers):
    for i in range(25):
        create(client, headers, title=f"t{i}")
    response = client.get(TASKS, headers=headers)
    page = response.get_json()
    assert set(page) == {"items", "next_cursor"} and len(page["items"]) == 20
    link = response.headers["Link"]
    assert link.startswith("</api/v1/tasks?") and link.endswith('>; rel="next"')
    assert f"cursor={page['next_cursor']}" in link
    rest = client.get(link[1:link.index(">")], headers=headers)
    assert len(rest.get_json()["items"]) == 5 and rest.get_json()["next_cursor"] is None and "Link" not in rest.headers


# --- keyset pages over equal timestamps -------------------------------------------------------------

@pytest.fixture
def crowd(app, user_tokens, client):
    """300 tasks sharing one created_at / updated_at / due_at, in a few priorities and statuses."""
    from taskapi.models.task import NO_DUE_EARLIEST, NO_DUE_LATEST, PRIORITIES, PRIORITY_RANK

    owner = ObjectId(client.get("/api/v1/auth/me", headers=bearer(user_tokens["access_token"])).get_json()["id"])
    moment = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    docs = []
    for i in range(300):
        priority = PRIORITIES[i % 4]
        due = None if i % 3 == 0 else moment
        docs.append({"owner": owner, "title": f"crowd {i}", "description": "", "status": ("todo", "done")[i % 2],
                     "priority": priority, "priority_rank": PRIORITY_RANK[priority], "due_at": due,
                     "due_key_asc": due or NO_DUE_LATEST, "due_key_desc": due or NO_DUE_EARLIEST, "tags": ["crowd"],
                     "completed_at": None, "created_at": moment, "updated_at": moment, "version": 1})
    get_db().tasks.insert_many(docs)
    return docs


def walk(client, headers, query: str, limit: int) -> tuple[list[str], int]:
    seen, cursor, pages = [], None, 0
    while True:
        url = f"{TASKS}?{query}&limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        response = client.get(url, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        page = response.get_json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return seen, pages
        assert pages < 200


@pytest.mark.parametrize("sort", ["created_at", "-created_at", "updated_at", "-updated_at", "due_at", "-due_at",
                                  "priority", "-priority"])
def test_cursor_walk_over_equal_timestamps_has_no_gaps_or_duplicates(client, headers, crowd, sort):
    seen, pages = walk(client, headers, f"sort={sort}", 7)
    assert len(seen) == len(set(seen)) == 300 and pages == 43
    ids = {str(d["_id"]): d for d in crowd}
    descending = sort.startswith("-")
    for a, b in zip(seen, seen[1:], strict=False):
        x, y = ids[a], ids[b]
        if sort.lstrip("-") == "priority":
            kx, ky = x["priority_rank"], y["priority_rank"]
        elif sort.lstrip("-") == "due_at":
            kx, ky = x["due_key_desc" if descending else "due_key_asc"], y["due_key_desc" if descending else "due_key_asc"]
        else:
            kx = ky = 0
        if kx != ky:
            assert (kx > ky) if descending else (kx < ky)
        else:
            assert (x["_id"] > y["_id"]) if descending else (x["_id"] < y["_id"])
    if sort.lstrip("-") == "due_at":
        undated = {str(d["_id"]) for d in crowd if d["due_at"] is None}
        assert set(seen[-len(undated):]) == undated  # no due date: last in both directions


def test_cursor_walk_with_filters(client, headers, crowd):
    seen, _ = walk(client, headers, "status=done&tag=crowd&sort=-priority", 9)
    expected = {str(d["_id"]) for d in crowd if d["status"] == "done"}
    assert len(seen) == len(set(seen)) and set(seen) == expected


def test_cursor_misuse_is_422(client, headers, other_headers, crowd, admin_tokens):
    page = client.get(f"{TASKS}?status=todo&sort=priority&limit=5", headers=headers).get_json()
    cursor = page["next_cursor"]
    for query in (f"status=done&sort=priority&limit=5&cursor={cursor}",  # other filters
                  f"status=todo&sort=-priority&limit=5&cursor={cursor}",  # another sort
                  f"sort=priority&limit=5&cursor={cursor}",  # a filter dropped
                  f"status=todo&sort=priority&limit=5&cursor={cursor[:-3]}abc",  # tampered
                  "status=todo&sort=priority&limit=5&cursor=not-a-cursor"):
        assert "cursor" in assert_problem(client.get(f"{TASKS}?{query}", headers=headers), 422)["errors"]
    # Another user's cursor, and a cursor from another endpoint, are refused too.
    assert_problem(client.get(f"{TASKS}?status=todo&sort=priority&limit=5&cursor={cursor}", headers=other_headers), 422)
    users_cursor = client.get("/api/v1/users?limit=1", headers=bearer(admin_tokens["access_token"])).get_json()["next_cursor"]
    assert_problem(client.get(f"{TASKS}?cursor={users_cursor}", headers=headers), 422)
    # A different page size with the same filters is fine.
    assert client.get(f"{TASKS}?status=todo&sort=priority&limit=50&cursor={cursor}", headers=headers).status_code == 200
