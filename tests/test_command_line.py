"""Arguments typed as one line are split as a Windows program splits its command line."""

from __future__ import annotations

import random
import subprocess

import pytest

from scriptflow_prefect.scripts.command_line import join_arguments, split_arguments


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('--days 7 "D:\\x y"', ["--days", "7", "D:\\x y"]),
        ("  a\t b  ", ["a", "b"]),
        ("", []),
        ('""', [""]),
        ('a "" b', ["a", "", "b"]),
        ("D:\\backups\\ next", ["D:\\backups\\", "next"]),  # no quote after: literal
        ('"D:\\backups\\" next', ['D:\\backups" next']),  # as Windows: \" is a quote
        ('"D:\\backups\\\\" next', ["D:\\backups\\", "next"]),
        ('a\\"b', ['a"b']),
        ('a\\\\"b c"', ["a\\b c"]),
        ('"say ""hi"""', ['say "hi"']),
        ('"open to the end', ["open to the end"]),
        ('pre"fix mid"post', ["prefix midpost"]),
        ("one\ntwo\r\nthree", ["one", "two", "three"]),
        ("--name=José ção", ["--name=José", "ção"]),
    ],
)
def test_it_splits_like_the_microsoft_c_runtime(line, expected):
    assert split_arguments(line) == expected


def test_join_and_split_give_back_any_list():
    rnd = random.Random(20261202)  # fixed: the same cases every run
    alphabet = ' \t"\\ab\nç'
    for _ in range(5000):
        args = [
            "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 6)))
            for _ in range(rnd.randint(0, 4))
        ]
        assert split_arguments(join_arguments(args)) == args, args
        plain = [a for a in args if "\n" not in a]
        # what Python's subprocess writes on Windows reads back the same way
        assert split_arguments(subprocess.list2cmdline(plain)) == plain
