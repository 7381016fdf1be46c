"""Secret variables (values in Prefect Secret blocks, `***` wherever a script prints one) and
"Run now" with other arguments, through the real stack and Prefect's own API."""

from __future__ import annotations

import json

import httpx
import pytest
import test_api_scripts
from conftest import output_of, upload, wait_run, wait_until
from test_api_scripts import assert_error, deployment_of

# A second overlay whose Prefect client goes through a proxy that refuses what a test says.
refusing_web = test_api_scripts.refusing_web

SECRET = "Tr0ub4dor-7731-zq"
PRINTS_IT = """\
import os, sys
key = os.environ.get("API_KEY")
print("key is", key)
print("embedded:" + str(key) + ":end")
print("on stderr", key, file=sys.stderr)
print("length", len(key or ""))
"""


@pytest.fixture(scope="module")
def prefect_api(stack):
    """Prefect's own API, as a power user reaches it."""
    with stack.prefect() as client:
        yield client


def blocks_named(prefect_api: httpx.Client, prefix: str) -> dict[str, dict]:
    """Prefect's Secret blocks whose name starts with `prefix`, with their values."""
    r = prefect_api.post(
        "/block_documents/filter",
        json={
            "block_documents": {"name": {"like_": prefix}},
            "block_types": {"slug": {"any_": ["secret"]}},
            "include_secrets": True,
        },
    )
    assert r.status_code == 200, r.text
    return {d["name"]: d for d in r.json() if d["name"].startswith(prefix)}


def run_now(client: httpx.Client, script_id: int, **body) -> dict:
    r = client.post(f"/scripts/{script_id}/runs", **body)
    assert r.status_code == 202, r.text
    return wait_run(client, r.json()["id"])


def test_it_stores_a_secret_in_prefect_and_never_shows_its_value(alice, prefect_api):
    script = upload(alice, PRINTS_IT)
    r = alice.patch(f"/scripts/{script['id']}", json={"secrets": {"API_KEY": SECRET}})
    assert r.status_code == 200, r.text
    assert r.json()["secrets"] == ["API_KEY"] and SECRET not in r.text
    assert SECRET not in alice.get(f"/scripts/{script['id']}").text
    assert SECRET not in alice.get("/scripts").text

    blocks = blocks_named(prefect_api, f"scriptflow-script-{script['id']}-")
    assert list(blocks) == [f"scriptflow-script-{script['id']}-api-key"]
    assert blocks[f"scriptflow-script-{script['id']}-api-key"]["data"]["value"] == SECRET
    deployment = deployment_of(prefect_api, script)
    assert deployment["parameters"]["secrets"] == ["API_KEY"]  # names only
    assert SECRET not in json.dumps(deployment)


def test_a_printed_secret_is_masked_in_output_search_and_prefect(alice, prefect_api):
    script = upload(alice, PRINTS_IT)
    alice.patch(f"/scripts/{script['id']}", json={"secrets": {"API_KEY": SECRET}})
    done = run_now(alice, script["id"])
    assert done["status"] == "succeeded", done

    lines = output_of(alice, done["id"])
    stdout = [line["text"] for line in lines if line["stream"] == "stdout"]
    assert stdout == ["key is ***", "embedded:***:end", f"length {len(SECRET)}"]  # it had it
    assert [line["text"] for line in lines if line["stream"] == "stderr"] == ["on stderr ***"]
    text = alice.get(f"/runs/{done['id']}/output.txt").text
    assert "embedded:***:end" in text and SECRET not in text

    found = alice.get("/runs", params={"q": SECRET, "script_id": script["id"]}).json()
    assert found["total"] == 0
    found = alice.get("/runs", params={"q": "embedded", "script_id": script["id"]}).json()
    assert [r["id"] for r in found["items"]] == [done["id"]]  # indexed, masked
    assert SECRET not in json.dumps(found)

    flow_run = prefect_api.get(f"/flow_runs/{done['id']}").json()
    assert flow_run["parameters"]["secrets"] == ["API_KEY"] and SECRET not in json.dumps(flow_run)

    def prefect_logs() -> list[dict] | None:
        logs = prefect_api.post(
            "/logs/filter", json={"logs": {"flow_run_id": {"any_": [done["id"]]}}}
        ).json()
        return logs if any("embedded:***:end" in log["message"] for log in logs) else None

    # Prefect's log worker sends in batches: the run may end before its last batch lands.
    logs = wait_until(prefect_logs, 30, "the masked line in Prefect's logs")
    assert not any(SECRET in log["message"] for log in logs)


def test_it_replaces_and_removes_secrets_and_deletes_them_with_the_script(alice, prefect_api):
    script = upload(alice, PRINTS_IT)
    prefix = f"scriptflow-script-{script['id']}-"
    alice.patch(
        f"/scripts/{script['id']}", json={"secrets": {"API_KEY": SECRET, "DB_PASS": "pw-4421"}}
    )
    r = alice.patch(f"/scripts/{script['id']}", json={"secrets": {"API_KEY": "second-value-88"}})
    assert r.json()["secrets"] == ["API_KEY", "DB_PASS"]
    assert blocks_named(prefect_api, prefix)[prefix + "api-key"]["data"]["value"] == (
        "second-value-88"
    )
    done = run_now(alice, script["id"])
    texts = [line["text"] for line in output_of(alice, done["id"])]
    assert "key is ***" in texts and "length 15" in texts

    r = alice.patch(f"/scripts/{script['id']}", json={"secrets": {"API_KEY": None}})
    assert r.status_code == 200 and r.json()["secrets"] == ["DB_PASS"]
    assert list(blocks_named(prefect_api, prefix)) == [prefix + "db-pass"]
    assert deployment_of(prefect_api, script)["parameters"]["secrets"] == ["DB_PASS"]
    done = run_now(alice, script["id"])
    assert "key is None" in [line["text"] for line in output_of(alice, done["id"])]

    assert alice.delete(f"/scripts/{script['id']}").status_code == 204
    assert blocks_named(prefect_api, prefix) == {}


@pytest.mark.parametrize(
    "body",
    [
        {"secrets": {"1BAD": SECRET}},
        {"secrets": {"has space": SECRET}},
        {"secrets": {"PREFECT_API_KEY": SECRET}},
        {"secrets": {"OK": 7731}},
        {"secrets": {"OK": SECRET + "\x00"}},
        {"secrets": {"OK": "x" * 40_000}},
        {"secrets": [SECRET]},
        {"secrets": SECRET},
        {"environment": {"TOKEN": "plain"}, "secrets": {"TOKEN": SECRET}},
        {"environment": {"api_key": "plain"}},  # the script has API_KEY as a secret
        {"secrets": {"api_key": SECRET}},  # the same variable on Windows
        {"arguments": ["ok"], "secrets": {"9": SECRET}},
    ],
)
def test_it_refuses_bad_secrets_with_a_reason_and_changes_nothing(alice, prefect_api, body):
    script = upload(alice, "print(1)\n")
    alice.patch(f"/scripts/{script['id']}", json={"secrets": {"API_KEY": "kept-value-1"}})
    r = alice.patch(f"/scripts/{script['id']}", json=body)
    detail = assert_error(r, 422)
    assert SECRET not in detail and "7731" not in detail
    after = alice.get(f"/scripts/{script['id']}").json()
    assert (after["secrets"], after["environment"], after["arguments"]) == (["API_KEY"], {}, [])
    blocks = blocks_named(prefect_api, f"scriptflow-script-{script['id']}-")
    assert {k: v["data"]["value"] for k, v in blocks.items()} == {
        f"scriptflow-script-{script['id']}-api-key": "kept-value-1"
    }


def test_removing_a_secret_the_script_does_not_have_is_no_error(alice):
    script = upload(alice, "print(1)\n")
    r = alice.patch(f"/scripts/{script['id']}", json={"secrets": {"NEVER_SET": None}})
    assert r.status_code == 200 and r.json()["secrets"] == []


def test_a_run_whose_secret_is_gone_from_prefect_fails_naming_it(alice, prefect_api):
    script = upload(alice, PRINTS_IT)
    alice.patch(f"/scripts/{script['id']}", json={"secrets": {"API_KEY": SECRET}})
    block = blocks_named(prefect_api, f"scriptflow-script-{script['id']}-api-key")
    (doc,) = block.values()
    assert prefect_api.delete(f"/block_documents/{doc['id']}").status_code == 204

    done = run_now(alice, script["id"])
    assert done["status"] == "failed", done
    assert done["message_code"] == "secrets_missing" and "API_KEY" in done["message"]
    assert done["exit_code"] is None  # the script never started


def test_a_secret_change_prefect_refuses_changes_nothing(alice, prefect_api, refusing_web):
    proxy, through_proxy = refusing_web
    script = upload(alice, "print(1)\n")
    prefix = f"scriptflow-script-{script['id']}-"
    alice.patch(f"/scripts/{script['id']}", json={"secrets": {"API_KEY": "old-value-1"}})
    proxy.refuse_patches.add("/api/deployments/")  # the deployment update after the writes
    try:
        r = through_proxy.patch(
            f"/scripts/{script['id']}",
            json={"secrets": {"API_KEY": "new-value-2", "OTHER": "other-value-3"}},
        )
    finally:
        proxy.refuse_patches.clear()
    detail = assert_error(r, 503)
    assert "new-value-2" not in detail
    assert alice.get(f"/scripts/{script['id']}").json()["secrets"] == ["API_KEY"]
    blocks = blocks_named(prefect_api, prefix)
    assert {k: v["data"]["value"] for k, v in blocks.items()} == {prefix + "api-key": "old-value-1"}
    assert deployment_of(prefect_api, script)["parameters"]["secrets"] == ["API_KEY"]


# -- Run now with other arguments ---------------------------------------------------------------
PRINTS_ARGS = "import json, sys\nprint(json.dumps(sys.argv[1:]))\n"


def test_run_now_with_other_arguments_runs_once_with_them(alice, prefect_api):
    script = upload(alice, PRINTS_ARGS)
    alice.patch(f"/scripts/{script['id']}", json={"arguments": ["--days", "7"]})

    r = alice.post(
        f"/scripts/{script['id']}/runs", json={"arguments": ["--days", "30", "D:\\x y", ""]}
    )
    assert r.status_code == 202, r.text
    assert r.json()["arguments"] == ["--days", "30", "D:\\x y", ""]
    done = wait_run(alice, r.json()["id"])
    assert done["status"] == "succeeded" and done["arguments"] == ["--days", "30", "D:\\x y", ""]
    assert json.loads(output_of(alice, done["id"])[0]["text"]) == ["--days", "30", "D:\\x y", ""]
    flow_run = prefect_api.get(f"/flow_runs/{done['id']}").json()
    assert flow_run["parameters"]["arguments"] == ["--days", "30", "D:\\x y", ""]

    # the script keeps its own; a run without a body gets those
    assert alice.get(f"/scripts/{script['id']}").json()["arguments"] == ["--days", "7"]
    plain = run_now(alice, script["id"])
    assert plain["arguments"] == ["--days", "7"]
    assert json.loads(output_of(alice, plain["id"])[0]["text"]) == ["--days", "7"]
    runs = alice.get("/runs", params={"script_id": script["id"]}).json()["items"]
    assert {r["id"]: r["arguments"] for r in runs} == {
        done["id"]: ["--days", "30", "D:\\x y", ""],
        plain["id"]: ["--days", "7"],
    }


def test_run_now_takes_an_empty_body_or_an_empty_object(alice):
    script = upload(alice, PRINTS_ARGS)
    assert alice.post(f"/scripts/{script['id']}/runs").status_code == 202
    assert alice.post(f"/scripts/{script['id']}/runs", json={}).status_code == 202
    r = alice.post(f"/scripts/{script['id']}/runs", json={"arguments": []})
    assert r.status_code == 202 and r.json()["arguments"] == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"json": {"arguments": "--all"}},
        {"json": {"arguments": [1, 2]}},
        {"json": {"arguments": ["a\x00b"]}},
        {"json": {"arguments": ["x"] * 101}},
        {"json": {"arguments": ["x" * 5000]}},
        {"json": {"argumnts": ["typo"]}},
        {"json": ["--all"]},
        {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
    ],
)
def test_run_now_refuses_bad_arguments_and_starts_nothing(alice, kwargs):
    script = upload(alice, PRINTS_ARGS)
    r = alice.post(f"/scripts/{script['id']}/runs", **kwargs)
    assert_error(r, 422)
    assert alice.get("/runs", params={"script_id": script["id"]}).json()["total"] == 0


def test_others_cannot_run_alices_script_with_arguments(alice, bob):
    script = upload(alice, PRINTS_ARGS)
    r = bob.post(f"/scripts/{script['id']}/runs", json={"arguments": ["x"]})
    assert_error(r, 404)
    r = bob.patch(f"/scripts/{script['id']}", json={"secrets": {"A": "b"}})
    assert_error(r, 404)
