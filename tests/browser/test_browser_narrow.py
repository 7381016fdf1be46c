"""Data tables at phone width (375 px): the rows stack, and every cell still says which column
it is in (WCAG 1.3.1), in legible text (1.4.3, 4.5:1), with nothing scrolling sideways (1.4.10).
The header row leaves the screen but stays in the accessibility tree; the wide layout keeps its
ordinary header row."""

from __future__ import annotations

import pytest
from conftest import unique, upload, wait_run

from browser.fixtures import login, screenshot

pytest_plugins = ["browser.fixtures"]
pytestmark = pytest.mark.browser

NARROW = {"width": 375, "height": 800}
WIDE = {"width": 1280, "height": 800}

# Every body cell of every data table (a table with a header row): its column header, its
# data-label, what its ::before shows and how, and the contrast of that text on what is behind it.
CELLS = """() => {
  const rgb = s => (s.match(/[\\d.]+/g) || []).map(Number);
  const opaque = c => c.length === 3 || (c.length === 4 && c[3] > 0);
  const lum = ([r, g, b]) => {
    const f = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const behind = el => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (opaque(c)) return c;
    }
    return [255, 255, 255];
  };
  const text = el => el.textContent.replace(/\\s+/g, " ").trim();
  const out = [];
  document.querySelectorAll("table").forEach((table, t) => {
    if (!table.tHead) return;  // key/value tables (retention) label rows with their own <th>
    const section = table.closest("section");
    const where = table.id || (section && section.querySelector("h2")
      ? text(section.querySelector("h2")) : document.title) + " #" + t;
    const heads = [...table.tHead.rows[0].cells].map(text);
    [...table.tBodies].forEach(body => [...body.rows].forEach((tr, r) => {
      [...tr.cells].forEach((cell, i) => {
        const before = getComputedStyle(cell, "::before");
        const fg = rgb(before.color), bg = behind(cell);
        const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
        const box = cell.getBoundingClientRect();
        out.push({where, row: r, column: i, header: heads[i], label: cell.dataset.label,
                  content: before.content, display: before.display,
                  visibility: before.visibility, fontSize: parseFloat(before.fontSize),
                  ratio: (hi + 0.05) / (lo + 0.05), left: box.left, right: box.right,
                  height: box.height});
      });
    }));
  });
  return out;
}"""
HEADER_ROWS = """() => [...document.querySelectorAll("table")].filter(t => t.tHead).map(t => {
  const box = t.tHead.getBoundingClientRect(), style = getComputedStyle(t.tHead);
  return {width: box.width, height: box.height, display: style.display,
          headers: [...t.tHead.rows[0].cells].map(c => c.textContent.replace(/\\s+/g, " ").trim())};
})"""


def css_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def column_headers_in_the_accessibility_tree(page) -> set[str]:
    """Names of the column headers Chromium gives assistive technology (not Playwright's guess)."""
    cdp = page.context.new_cdp_session(page)
    try:
        nodes = cdp.send("Accessibility.getFullAXTree")["nodes"]
    finally:
        cdp.detach()
    return {
        n.get("name", {}).get("value", "").strip()
        for n in nodes
        if not n.get("ignored") and n.get("role", {}).get("value") == "columnheader"
    }


def assert_labelled_at_375(page, path: str, *, min_rows: int = 1) -> int:
    """Open `path` at 375 px and check every body cell of every data table; returns the count."""
    page.set_viewport_size(NARROW)
    page.goto(path)
    cells = page.evaluate(CELLS)
    rows = {(c["where"], c["row"]) for c in cells}
    assert len(rows) >= min_rows, f"{path}: expected at least {min_rows} table row(s), got {rows}"
    for c in cells:
        at = f"{path} [{c['where']}] row {c['row']} column {c['column']} ({c['header']!r})"
        assert c["header"], f"{at}: the column has no header text"
        assert c["label"] == c["header"], f"{at}: data-label is {c['label']!r}"
        # `"Label"`, or `"Label" / ""` where the alternative text keeps it from being read twice
        assert c["content"] in (css_string(c["header"]), css_string(c["header"]) + ' / ""'), (
            f"{at}: ::before shows {c['content']}"
        )
        assert c["display"] != "none" and c["visibility"] == "visible", f"{at}: label hidden"
        assert c["fontSize"] >= 12, f"{at}: label is {c['fontSize']}px"
        assert c["ratio"] >= 4.5, f"{at}: label contrast {c['ratio']:.2f}:1 is under 4.5:1"
        assert c["height"] > 0 and c["left"] >= -0.5 and c["right"] <= NARROW["width"] + 0.5, (
            f"{at}: cell is off screen ({c['left']:.0f}–{c['right']:.0f}px)"
        )
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= NARROW["width"], f"{path} is {width}px wide at 375px: it scrolls sideways"

    # The header row is off screen but still read: cells keep their column headers.
    spoken = column_headers_in_the_accessibility_tree(page)
    for head in page.evaluate(HEADER_ROWS):
        assert head["width"] <= 1 and head["height"] <= 1, f"{path}: header row still shown"
        missing = set(head["headers"]) - spoken
        assert not missing, f"{path}: column headers gone from the accessibility tree: {missing}"
    return len(cells)


def assert_wide_layout_unchanged(page, path: str) -> None:
    page.set_viewport_size(WIDE)
    page.goto(path)
    for head in page.evaluate(HEADER_ROWS):
        assert head["display"] == "table-header-group" and head["height"] > 1, path
    assert {c["content"] for c in page.evaluate(CELLS)} <= {"none", "normal"}, (
        f"{path}: column labels show in the wide layout"
    )


def scheduled_script_with_a_run(client, name: str) -> dict:
    script = upload(client, "print('narrow')\n", name=unique(name))
    r = client.put(
        f"/scripts/{script['id']}/schedule",
        json={"frequency": "daily", "time": "06:15", "timezone": "UTC"},
    )
    assert r.status_code == 200, r.text
    run_id = client.post(f"/scripts/{script['id']}/runs").json()["id"]
    assert wait_run(client, run_id)["status"] == "succeeded"
    return script


def test_runs_scripts_and_schedules_label_every_cell_at_375px(page, alice):
    scheduled_script_with_a_run(alice, "narrow")
    login(page, "alice")
    for name, path in (("runs", "/runs"), ("scripts", "/scripts"), ("schedules", "/schedules")):
        assert assert_labelled_at_375(page, path) >= 5, path
        screenshot(page, f"narrow-{name}")
        assert_wide_layout_unchanged(page, path)


def test_the_other_tables_label_every_cell_at_375px(page, admin):
    script = scheduled_script_with_a_run(admin, "narrow-admin")
    login(page, "admin")
    page.goto("/settings")
    page.get_by_label("Label").fill("narrow test")  # a row in the tokens table
    page.get_by_role("button", name="Create token").click()
    page.locator("#new-token").wait_for()
    for path, min_rows in (
        ("/", 1),  # dashboard
        (f"/scripts/{script['id']}", 2),  # recent runs and versions
        ("/settings", 2),  # tokens and users
        ("/scheduler", 1),
        ("/notifications", 0),
    ):  # rows only if an email went out
        assert_labelled_at_375(page, path, min_rows=min_rows)
        assert_wide_layout_unchanged(page, path)
