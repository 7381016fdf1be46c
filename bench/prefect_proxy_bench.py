"""The Prefect UI's first load, direct on Prefect's port vs through the overlay's `/prefect/`
proxy (issue 14, deliverable 3): median latency of N loads side by side, and the overlay's
extra memory after K loads.

A "load" is what Chromium fetched when it opened the UI through the proxy once (recorded
first, with Playwright): the index, every asset, `ui-settings` and the UI's first API calls;
replayed with up to 6 requests at once (a browser's connections per host), uncached. Direct
loads send Prefect's auth string (as the UI would after its prompt); proxied ones ScriptFlow's
session cookie. Direct and proxied loads alternate, so both see the same machine load.

    .venv/bin/python bench/prefect_proxy_bench.py [N] [K]      (defaults 20, 100)

Writes the figures to bench/results-prefect-proxy.txt too."""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import ADMIN_PASSWORD, start_stack, stop_stack  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results-prefect-proxy.txt"
CHROMIUM = "/usr/bin/chromium"
PARALLEL = 6
FAILED: set[str] = set()  # what answered >= 400 (named in the results)


def sign_in(url: str) -> httpx.Cookies:
    with httpx.Client(base_url=url, timeout=30) as web:
        page = web.get("/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        r = web.post(
            "/login", data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": csrf}
        )
        assert r.status_code == 303, r.text
        return web.cookies


def record(url: str, cookies: httpx.Cookies) -> list[tuple[str, str, bytes | None, str]]:
    """(method, path, body, Accept) of every request Chromium makes under /prefect/ while
    opening the UI's first page through the proxy, until its deployments list is shown."""
    from playwright.sync_api import sync_playwright

    seen: list[tuple[str, str, bytes | None, str]] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        context = browser.new_context(base_url=url)
        host = urlsplit(url).hostname
        context.add_cookies(
            [{"name": k, "value": v, "domain": host, "path": "/"} for k, v in cookies.items()]
        )
        page = context.new_page()

        def note(request) -> None:
            path = urlsplit(request.url).path + (
                "?" + urlsplit(request.url).query if urlsplit(request.url).query else ""
            )
            if request.url.startswith(url + "/prefect/"):
                # A page is asked for as HTML (Prefect answers the UI's routes only then).
                page_load = request.resource_type == "document"
                accept = "text/html" if page_load else request.headers.get("accept", "*/*")
                seen.append((request.method, path, request.post_data_buffer, accept))

        page.on("request", note)
        page.goto("/prefect/v2/deployments")
        page.get_by_text("clean_history").first.wait_for(timeout=60_000)
        page.wait_for_timeout(2000)  # the page's first round of API calls
        browser.close()
    return seen


async def one_load(client: httpx.AsyncClient, requests: list, headers_for) -> tuple[float, int]:
    gate = asyncio.Semaphore(PARALLEL)
    failures = 0

    async def fetch(method: str, path: str, body: bytes | None, accept: str) -> None:
        nonlocal failures
        async with gate:
            headers = {**headers_for(method, path), "Accept": accept}  # a page: text/html
            r = await client.request(method, path, content=body, headers=headers)
            await r.aread()
            if r.status_code >= 400:
                failures += 1
                FAILED.add(f"{r.status_code} {method} {path}")

    start = time.perf_counter()
    await asyncio.gather(*(fetch(*req) for req in requests))
    return time.perf_counter() - start, failures


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


async def measure(stack, requests, cookies, n: int, k: int) -> dict:
    auth = (stack.home / "prefect" / "auth_string").read_text().strip()
    user, _sep, password = auth.partition(":")
    limits = httpx.Limits(max_connections=PARALLEL, max_keepalive_connections=PARALLEL)
    direct = httpx.AsyncClient(
        base_url=stack.prefect_url, auth=(user, password), timeout=60, limits=limits
    )
    proxied = httpx.AsyncClient(base_url=stack.url, cookies=cookies, timeout=60, limits=limits)

    def direct_path(path: str) -> str:  # Prefect's own UI calls its API at /api
        return path.replace("/prefect/api/", "/api/", 1)

    direct_requests = [(m, direct_path(p), b, a) for m, p, b, a in requests]

    def same_site(method: str, path: str) -> dict:
        return {"Origin": stack.url, "Content-Type": "application/json"}

    def json_body(method: str, path: str) -> dict:
        return {"Content-Type": "application/json"}

    start_rss = rss(stack.proc.pid)  # before the proxy's first request
    times: dict[str, list[float]] = {"direct": [], "proxy": []}
    failures = {"direct": 0, "proxy": 0}
    for _ in range(2):  # warm both (the UI's files read once from disk, connections open)
        await one_load(direct, direct_requests, json_body)
        await one_load(proxied, requests, same_site)
    for _ in range(n):
        t, f = await one_load(direct, direct_requests, json_body)
        times["direct"].append(t)
        failures["direct"] += f
        t, f = await one_load(proxied, requests, same_site)
        times["proxy"].append(t)
        failures["proxy"] += f
    before = rss(stack.proc.pid)
    for _ in range(k):
        await one_load(proxied, requests, same_site)
    after = rss(stack.proc.pid)
    await direct.aclose()
    await proxied.aclose()
    return {"times": times, "failures": failures, "rss": (start_rss, before, after)}


def main(n: int, k: int) -> None:
    home = Path(tempfile.mkdtemp(prefix="sf-proxy-bench-", dir="/var/tmp"))
    stack = start_stack(home)
    try:
        cookies = sign_in(stack.url)
        requests = record(stack.url, cookies)
        result = asyncio.run(measure(stack, requests, cookies, n, k))
    finally:
        stop_stack(stack)
    kinds: dict[str, int] = {}
    for _m, path, _b, _a in requests:
        kind = (
            "api"
            if "/prefect/api/" in path
            else "ui-settings"
            if "ui-settings" in path
            else "files"
        )
        kinds[kind] = kinds.get(kind, 0) + 1
    t, (start, before, after) = result["times"], result["rss"]
    med_d, med_p = statistics.median(t["direct"]), statistics.median(t["proxy"])
    lines = [
        f"# bench/prefect_proxy_bench.py, {date.today()}, load average {os.getloadavg()[0]:.1f} "
        f"({os.cpu_count()} cores, shared)",
        f"first load of the Prefect UI (V2, deployments page): {len(requests)} requests "
        f"({', '.join(f'{v} {k}' for k, v in sorted(kinds.items()))}), {PARALLEL} at a time",
        f"{'':<22}{'direct :port':>14}{'via /prefect/':>16}",
        f"{'median of ' + str(n):<22}{med_d * 1000:>12.0f}ms{med_p * 1000:>14.0f}ms"
        f"   (+{(med_p - med_d) * 1000:.0f} ms, x{med_p / med_d:.2f})",
        f"{'min':<22}{min(t['direct']) * 1000:>12.0f}ms{min(t['proxy']) * 1000:>14.0f}ms",
        f"{'max':<22}{max(t['direct']) * 1000:>12.0f}ms{max(t['proxy']) * 1000:>14.0f}ms",
        f"{'answers >= 400':<22}{result['failures']['direct']:>14}{result['failures']['proxy']:>16}"
        f"   {', '.join(sorted(FAILED))}",
        f"overlay process RSS (web + runner, `scriptflow up`): {start / 2**20:.1f} MiB before any "
        f"proxied request, {before / 2**20:.1f} MiB after {n + 2} loads, {after / 2**20:.1f} MiB "
        f"after {k} more ({(before - start) / 2**20:+.1f} MiB, "
        f"then {(after - before) / 2**20:+.1f} MiB)",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    RESULTS.write_text(text)


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 20,
        int(sys.argv[2]) if len(sys.argv) > 2 else 100,
    )
