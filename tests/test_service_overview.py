"""The overview routes under ``/volley/v1`` (the dashboard's and ``volley tasks``' data) and the
dashboard's files: counts, throughput and failures as stored, pages, bad parameters -- and a
second tenant that never sees the first one's objects.  Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from service_helpers import (
    Service,
    User,
    endpoint_publish_result,
    heartbeat_body,
    new_uuid,
    result_body,
    wait_for,
)

pytest_plugins = ["service_fixtures"]


def get(svc: Service, user: User, path: str, **params: Any) -> Any:
    return svc.client.get(f"/volley/v1/{path}", params=params, headers=user.headers)


def ok(svc: Service, user: User, path: str, **params: Any) -> dict[str, Any]:
    r = get(svc, user, path, **params)
    assert r.status_code == 200, r.text
    return dict(r.json())


def error(r: Any, status: int, code: str, *words: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code, body
    for word in words:
        assert word in body["message"], body


def _group_with_results(svc: Service, user: User, reg: dict[str, Any], fid: str, n_ok: int,
                        errors: list[str], n_waiting: int = 0) -> dict[str, Any]:
    """A task group of ``user`` whose tasks succeeded, failed with ``errors`` or still wait."""
    out = svc.submit(user, reg["endpoint_id"], fid, *[(i,) for i in range(n_ok + len(errors) + n_waiting)])
    ids = out["tasks"][fid]
    for tid in ids[:n_ok]:
        endpoint_publish_result(svc, reg, result_body(tid, 1))
    for tid, text in zip(ids[n_ok : n_ok + len(errors)], errors, strict=True):
        endpoint_publish_result(svc, reg, result_body(tid, error=text))
    done = set(ids[: n_ok + len(errors)])
    wait_for(lambda: all(svc.task(user, t)["status"] in ("success", "failed") for t in done),
             what="the results to be stored")
    return out


def _two_tenants(svc: Service) -> dict[str, Any]:
    alice, bob = svc.new_user(), svc.new_user()
    a_reg, b_reg = svc.register_endpoint(alice), svc.register_endpoint(bob)
    a_fid, b_fid = svc.register_function(alice), svc.register_function(bob)
    b_group = _group_with_results(svc, bob, b_reg, b_fid, 1, ["Traceback\nKeyError: 'bob'"], 1)
    return {"alice": alice, "bob": bob, "a_reg": a_reg, "b_reg": b_reg, "a_fid": a_fid,
            "b_group": b_group["task_group_id"]}


def test_task_groups_are_listed_newest_first_with_counts_and_pages(svc: Service) -> None:
    t = _two_tenants(svc)
    alice, a_reg, a_fid = t["alice"], t["a_reg"], t["a_fid"]
    first = _group_with_results(svc, alice, a_reg, a_fid, 2, ["Traceback\nValueError: x"], 1)
    second = _group_with_results(svc, alice, a_reg, a_fid, 0, [], 3)
    third = _group_with_results(svc, alice, a_reg, a_fid, 1, [])

    listed = ok(svc, alice, "task_groups")
    assert "next" not in listed
    assert [g["task_group_id"] for g in listed["task_groups"]] == [
        third["task_group_id"], second["task_group_id"], first["task_group_id"]]
    by_id = {g["task_group_id"]: g for g in listed["task_groups"]}
    assert by_id[first["task_group_id"]]["counts"] == {"waiting-for-ep": 1, "success": 2, "failed": 1, "cancelled": 0}
    assert by_id[first["task_group_id"]]["total"] == 4
    assert by_id[second["task_group_id"]]["counts"] == {"waiting-for-ep": 3, "success": 0, "failed": 0, "cancelled": 0}
    assert by_id[third["task_group_id"]]["counts"] == {"waiting-for-ep": 0, "success": 1, "failed": 0, "cancelled": 0}

    # pages of two: the cursor continues exactly where the first page stopped
    page1 = ok(svc, alice, "task_groups", limit=2)
    page2 = ok(svc, alice, "task_groups", limit=2, after=page1["next"])
    assert "next" not in page2
    assert [g["task_group_id"] for g in page1["task_groups"] + page2["task_groups"]] == list(by_id)

    # bob sees his own group only, and alice's list never names his
    assert [g["task_group_id"] for g in ok(svc, t["bob"], "task_groups")["task_groups"]] == [t["b_group"]]
    assert t["b_group"] not in str(listed)


def test_task_group_summary_counts_throughput_and_failures(svc: Service) -> None:
    t = _two_tenants(svc)
    alice = t["alice"]
    long_error = "Traceback (most recent call last):\n" + "  frame\n" * 1000 + "RuntimeError: the end"
    out = _group_with_results(svc, alice, t["a_reg"], t["a_fid"], 3,
                              ["Traceback\nValueError: <b>not markup</b>", long_error], 2)
    tg = out["task_group_id"]
    s = ok(svc, alice, f"task_groups/{tg}")
    assert s["task_group_id"] == tg and s["total"] == 7
    assert s["counts"] == {"waiting-for-ep": 2, "success": 3, "failed": 2, "cancelled": 0}
    assert s["first_submitted"] <= s["last_completed"]
    # every completion is in the series, once, in a bucket of a round size
    th = s["throughput"]
    assert sum(th["success"]) == 3 and sum(th["failed"]) == 2
    assert th["start"] == s["first_submitted"] and th["bucket_s"] >= 1
    # the series reaches at least the last completion's bucket (tasks still wait, so it runs
    # on to now), in at most 60 buckets
    reach = min(60, int((s["last_completed"] - th["start"]) // th["bucket_s"]) + 1)
    assert len(th["success"]) == len(th["failed"])
    assert reach <= len(th["success"]) <= 60
    assert s["rate_per_s"] is None or s["rate_per_s"] > 0

    failures = {f["exception"].splitlines()[-1]: f for f in s["failures"]}
    assert set(failures) == {"ValueError: <b>not markup</b>", "RuntimeError: the end"}
    short, cut = failures["ValueError: <b>not markup</b>"], failures["RuntimeError: the end"]
    assert short["error_code"] == "RemoteExecutionError" and not short["truncated"]
    assert short["exception"] == "Traceback\nValueError: <b>not markup</b>" and short["completion_t"] > 0
    assert cut["truncated"] and len(cut["exception"]) == 4000 and long_error.endswith(cut["exception"])
    assert {f["task_id"] for f in s["failures"]} <= set(out["tasks"][t["a_fid"]])

    assert len(ok(svc, alice, f"task_groups/{tg}", failures=1)["failures"]) == 1
    assert ok(svc, alice, f"task_groups/{tg}", failures=0)["failures"] == []
    error(get(svc, alice, f"task_groups/{tg}", failures=101), 422, "INVALID_REQUEST", "failures", "100")

    # another tenant's group answers 404, exactly like one that does not exist
    for who, group in ((t["bob"], tg), (alice, t["b_group"]), (alice, new_uuid()), (alice, "garbage")):
        error(get(svc, who, f"task_groups/{group}"), 404, "NOT_FOUND")


def test_summary_of_a_group_with_nothing_completed(svc: Service) -> None:
    alice = svc.new_user()
    out = svc.submit(alice, svc.register_endpoint(alice)["endpoint_id"], svc.register_function(alice), (1,))
    s = ok(svc, alice, f"task_groups/{out['task_group_id']}")
    assert s["counts"] == {"waiting-for-ep": 1, "success": 0, "failed": 0, "cancelled": 0}
    assert s["last_completed"] is None and s["rate_per_s"] is None and s["failures"] == []
    assert sum(s["throughput"]["success"]) == 0 == sum(s["throughput"]["failed"])


def test_endpoints_overview_shows_the_last_report_of_own_endpoints_only(svc: Service) -> None:
    t = _two_tenants(svc)
    alice, a_reg = t["alice"], t["a_reg"]
    second = svc.register_endpoint(alice, endpoint_name="second")
    ep = a_reg["endpoint_id"]
    kw, url = a_reg["heartbeat_queue_info"]["queue_publish_kwargs"], a_reg["heartbeat_queue_info"]["connection_url"]
    svc.broker.publish(kw["exchange"], kw["routing_key"],
                       heartbeat_body(ep, total_workers=4, idle_workers=3, queue_depth=7,
                                      outstanding_tasks=1, engine_type="ThreadPoolEngine"), url=url)

    def mine() -> dict[str, Any]:
        return {e["endpoint_id"]: e for e in ok(svc, alice, "endpoints")["endpoints"]}

    online = wait_for(lambda: (e := mine()[ep])["status"] == "online" and e, what="the heartbeat")
    assert online["total_workers"] == 4 and online["idle_workers"] == 3 and online["queue_depth"] == 7
    assert online["outstanding_tasks"] == 1 and online["engine_type"] == "ThreadPoolEngine"
    assert online["last_heartbeat"] > 0 and online["heartbeat_period"] == 5
    quiet = mine()[second["endpoint_id"]]
    assert quiet["status"] == "offline" and quiet["last_heartbeat"] is None and quiet["total_workers"] is None
    assert set(mine()) == {ep, second["endpoint_id"]}  # not bob's

    page1 = ok(svc, alice, "endpoints", limit=1)
    page2 = ok(svc, alice, "endpoints", limit=1, after=page1["next"])
    assert [e["endpoint_id"] for e in page1["endpoints"] + page2["endpoints"]] == [ep, second["endpoint_id"]]
    assert "next" not in page2
    assert [e["endpoint_id"] for e in ok(svc, t["bob"], "endpoints")["endpoints"]] == [t["b_reg"]["endpoint_id"]]


@pytest.mark.parametrize("path", ["endpoints", "task_groups"])
def test_list_limit_or_cursor_out_of_range_is_422(svc: Service, path: str) -> None:
    alice = svc.new_user()
    error(get(svc, alice, path, limit=0), 422, "INVALID_REQUEST", "limit", "100")
    error(get(svc, alice, path, limit=101), 422, "INVALID_REQUEST", "limit", "100")
    error(get(svc, alice, path, after="garbage"), 422, "INVALID_REQUEST", "after", "next")
    error(get(svc, alice, path, limit="many"), 422, "INVALID_REQUEST", "limit")


def test_bucket_sizes_are_round_and_fit_sixty_buckets() -> None:
    from volley.service.routes.overview import MAX_BUCKETS, bucket_size

    assert bucket_size(0) == 1 and bucket_size(60) == 1 and bucket_size(61) == 2
    assert bucket_size(3600) == 60 and bucket_size(3601) == 120
    for span in (0.5, 59, 999, 86_400, 40 * 86_400):
        assert span <= bucket_size(span) * MAX_BUCKETS


def test_dashboard_files_are_served_without_a_token_with_a_strict_policy(svc: Service) -> None:
    r = svc.client.get("/dashboard", follow_redirects=False)
    assert r.status_code == 308 and r.headers["location"] == "dashboard/"
    page = svc.client.get("/dashboard/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="dashboard.js"' in page.text and 'href="dashboard.css"' in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    for name, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        r = svc.client.get(f"/dashboard/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind) and r.content
        assert r.headers["x-content-type-options"] == "nosniff"
    # nothing else is served from there, and the page is not part of the API schema
    assert svc.client.get("/dashboard/secrets.txt").status_code == 404
    assert not any(p.startswith("/dashboard") for p in svc.client.get("/openapi.json").json()["paths"])
