"""Which runs printed a phrase, across the whole retention window, fast.

Query language: the words of `q`, in that order, as a phrase: case- and accent-insensitive,
punctuation ignored, the last word may be the start of a longer one ("connection refu" finds
"Connection refused."). A phrase never spans two lines (a separator token sits between lines).
A search asks each day file of the window (30 small queries) and merges."""

from __future__ import annotations

import re
import sqlite3
import unicodedata
from dataclasses import dataclass
from datetime import datetime

from scriptflow_prefect.history.catalog import (
    SEQ_SHIFT,
    catalog,
    day_of,
    day_path,
    history_dir,
    source,
)
from scriptflow_prefect.history.output_log import parse_record

LINE_TOKEN = "qqsflx"  # between lines in the index: a phrase cannot match across two lines
MAX_HITS = 100_000


class QueryError(ValueError):
    """`q` has nothing to search for (no letter or digit)."""


# -- words ---------------------------------------------------------------------------------

_WORD = re.compile(r"[^\W_]+")


def words(text: str) -> list[str]:
    """Words as FTS5's unicode61 tokenizer (remove_diacritics 2) sees them."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    return [w.lower() for w in _WORD.findall(text)]


@dataclass(frozen=True)
class Phrase:
    words: tuple[str, ...]

    @classmethod
    def parse(cls, q: str) -> Phrase:
        ws = tuple(w for w in words(q) if w != LINE_TOKEN)
        if not ws:
            raise QueryError(q)
        return cls(ws)

    @property
    def prefix(self) -> bool:  # a short last word as a prefix would match half the index
        return len(self.words[-1]) >= 3

    def fts(self) -> str:
        return '"' + " ".join(self.words) + '"' + (" *" if self.prefix else "")

    def matches(self, text: str) -> bool:
        ws, n = words(text), len(self.words)
        for i in range(len(ws) - n + 1):
            if ws[i : i + n - 1] == list(self.words[:-1]) and (
                ws[i + n - 1] == self.words[-1]
                or (self.prefix and ws[i + n - 1].startswith(self.words[-1]))
            ):
                return True
        return False


# -- searching -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    run_id: str
    script_id: int | None
    expected: float
    rowid: int


def search(
    settings,
    phrase: Phrase,
    *,
    script_ids: list[int] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[Hit]:
    """Indexed runs whose output holds the phrase, newest first, with their first matching
    block. `script_ids` None means every script."""
    d = history_dir(settings)
    if not (d / "catalog.db").exists():
        return []
    lo = since.timestamp() if since else 0.0
    hi = until.timestamp() if until else 1e12
    days = sorted(p.name[4:14] for p in d.glob("fts-*.db"))
    if since:
        days = [x for x in days if x >= day_of(since)]
    if until:
        days = [x for x in days if x <= day_of(until)]
    where = ["r.state = 'indexed'", "r.expected >= ?", "r.expected <= ?"]
    params: list = [phrase.fts(), lo, hi]
    if script_ids is not None:
        if not script_ids:
            return []
        where.append(f"r.script_id IN ({','.join('?' * len(script_ids))})")
        params += list(script_ids)
    sql = (
        f"SELECT r.run_id, r.script_id, r.expected, m.hit FROM "
        f"(SELECT rowid >> {SEQ_SHIFT} AS seq, min(rowid) AS hit FROM fts WHERE fts MATCH ? "
        f"GROUP BY 1) m JOIN cat.runs r ON r.seq = m.seq WHERE {' AND '.join(where)}"
    )
    hits: list[Hit] = []
    cat_path = str(d / "catalog.db")
    for day in days:
        conn = sqlite3.connect(day_path(settings, day), timeout=30, check_same_thread=False)
        try:
            conn.execute("ATTACH DATABASE ? AS cat", (cat_path,))
            hits += [Hit(*row) for row in conn.execute(sql, params)]
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
        finally:
            conn.close()
        if len(hits) > MAX_HITS:
            break
    hits.sort(key=lambda h: -h.expected)
    return hits


def matching_line(settings, hit: Hit, phrase: Phrase) -> dict | None:
    """The first line of the hit's block that holds the phrase (the block holds it)."""
    n = hit.rowid & ((1 << SEQ_SHIFT) - 1)
    cat = catalog(settings)
    try:
        row = cat.execute(
            "SELECT b.offset, b.size FROM blocks b JOIN runs r ON r.seq = b.seq "
            "WHERE r.run_id = ? AND b.n = ?",
            (hit.run_id, n),
        ).fetchone()
    finally:
        cat.close()
    if row is None:
        return None
    try:
        with source(settings, hit.run_id) as src:
            data = src.read(row[0], row[1])
    except FileNotFoundError:
        return None
    at = row[0]
    fallback = None
    for raw in data.split(b"\n")[:-1]:
        record = parse_record(raw)
        record["at"] = at
        if phrase.matches(record["text"]):
            return record
        fallback = fallback or record
        at += len(raw) + 1
    return fallback
