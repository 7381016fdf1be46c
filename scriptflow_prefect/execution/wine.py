"""wine as the .bat launcher of a Linux worker: its prefix, its locale, its regional formats.

Measured with wine 8.0 (Debian 8.0~repack-4) on a worker whose LANG is unset, with .bat files
holding every byte 0x80-0xFF, Portuguese words in UTF-8, cp1252 and cp850, `echo %DATE% %TIME%`,
`mkdir "Relatórios"`, `%1` and `%VAR%` holding accents:

- cmd reads a .bat in the OEM code page and writes to a pipe in the ANSI one (with no console,
  GetConsoleOutputCP() is 0: CP_ACP). `chcp 65001` cannot change either: it prints "Invalid
  code page" and sets errorlevel 1. The registry's Nls\\CodePage ACP/OEMCP are not read (set
  to 1252/1252, the output did not change).
- Both code pages follow the locale wine takes from setlocale(), or from the name in LC_ALL
  when glibc does not have that locale. The C locale is en-US: OEM 437 in, ANSI 1252 out, so
  UTF-8 "concluída" came out as "conclu+¡da" and cp1252 "não" as "npo".
- A Unicode-only locale (hi-IN) has both code pages UTF-8: a UTF-8 .bat's text, `%1`, `%VAR%`,
  file names and emoji pass through as they are, and `mkdir "Relatórios"` makes "Relatórios".
  (A locale whose two code pages are one single-byte page, th-TH 874/874, passes every byte of
  the file through too, but makes "Relatรณrios" and prints accented names from the system as
  "?"; pt-BR reads cp850 and writes cp1252, right for cp850 files only.) So .bat files run
  under hi-IN, a legacy-code-page file rewritten as UTF-8 first (bat_text.py); `type` of a
  legacy-encoded data file then shows U+FFFD for its accents.
- wine converts Linux strings (arguments, environment, file names) with the codeset of
  LC_CTYPE; for a locale glibc lacks that is ASCII and "relatório" became "relatC3rio". LOCPATH
  points glibc at a folder where that locale's name is the C.UTF-8 locale (hi-IN's messages
  in wine's cmd are English).
- %DATE% and %TIME% follow HKCU\\Control Panel\\International (sShortDate, sTimeFormat, ...).
  wine rewrites those with the locale's defaults when the locale changes and keeps values set
  under an unchanged one: the formats of the worker's SCRIPTFLOW_LANGUAGE are imported into
  the worker's prefix once, after it is built; each run's prefix copies its registry. %TIME%
  has no seconds under wine ("21:40", not "21:40:12,34").
- A substring of %DATE% or %TIME% that reaches their last character loses it: with %DATE%
  "02/12/2026", `%date:~6,4%` gave "202" and `%date:~-4%` "/2026" (cmd counts the NUL that
  GetDateFormatW's length includes). A variable named DATE overrides the built-in one, as on
  Windows: runs get DATE set to the day they start, in the worker's format ("%date:~6,4%" is
  "2026"). %TIME% stays live; its pt-BR format ends with an empty AM/PM mark ("21:40 "), so
  `%time:~3,2%` ends before the last character and gives the minutes.
- `chcp` cannot set a code page without a console: `chcp 65001 > nul` left errorlevel 1, and a
  script that ended there failed. The output is UTF-8 whatever the script asks for, so wine's
  PATH starts with C:\\scriptflow-shims, whose chcp.exe is a copy of wine's where.exe, a stub
  that prints nothing and ends 0 (checked when the prefix is set up; without it, as for an
  account whose own prefix never was, chcp is wine's).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from scriptflow_prefect.execution.models import ScriptStartError

if sys.platform == "win32":
    from scriptflow_prefect.execution.windows import file_lock
else:
    from scriptflow_prefect.execution.posix import file_lock

WINE_LOCALE = "hi_IN.UTF-8"
_C_UTF8 = (Path("/usr/lib/locale/C.utf8"), Path("/usr/lib/locale/C.UTF-8"))
_FORMATS_MARKER = ".scriptflow-formats"
_SHIMS = "scriptflow-shims"  # in the prefix's drive_c, which each run's prefix links to
_SHIMS_WINDOWS = "C:\\scriptflow-shims"
_NO_OP = "where.exe"  # a stub in wine 8; checked before it stands in for chcp
# The values wine 8 writes under HKCU\Control Panel\International for en-US and pt-BR
# (`LC_ALL=pt_BR.UTF-8 wine reg query "HKCU\Control Panel\International"`), less the
# locale's name and number, which wine compares to decide whether the locale changed.
REGIONAL_FORMATS: dict[str, dict[str, str]] = {
    "en": {
        "iCountry": "1",
        "iCurrency": "0",
        "iDate": "0",
        "iMeasure": "1",
        "iNegCurr": "0",
        "iPaperSize": "1",
        "iTime": "0",
        "iTLZero": "0",
        "s1159": "AM",
        "s2359": "PM",
        "sCountry": "United States",
        "sCurrency": "$",
        "sDate": "/",
        "sDecimal": ".",
        "sGrouping": "3;0",
        "sList": ",",
        "sLongDate": "dddd, MMMM d, yyyy",
        "sMonDecimalSep": ".",
        "sMonGrouping": "3;0",
        "sMonThousandSep": ",",
        "sShortDate": "M/d/yyyy",
        "sShortTime": "h:mm tt",
        "sThousand": ",",
        "sTime": ":",
        "sTimeFormat": "h:mm:ss tt",
        "sYearMonth": "MMMM yyyy",
    },
    "pt_BR": {
        "iCountry": "55",
        "iCurrency": "2",
        "iDate": "1",
        "iMeasure": "0",
        "iNegCurr": "9",
        "iPaperSize": "9",
        "iTime": "1",
        "iTLZero": "1",
        "s1159": "",
        "s2359": "",
        "sCountry": "Brazil",
        "sCurrency": "R$",
        "sDate": "/",
        "sDecimal": ",",
        "sGrouping": "3;0",
        "sList": ";",
        "sLongDate": "dddd, d 'de' MMMM 'de' yyyy",
        "sMonDecimalSep": ",",
        "sMonGrouping": "3;0",
        "sMonThousandSep": ".",
        "sShortDate": "dd/MM/yyyy",
        "sShortTime": "HH:mm",
        "sThousand": ".",
        "sTime": ":",
        "sTimeFormat": "HH:mm:ss tt",
        "sYearMonth": "MMMM 'de' yyyy",
    },
}


def is_wine(launcher: Sequence[str] | None) -> bool:
    if not launcher:
        return False
    return os.path.basename(launcher[0]).lower().startswith("wine")


def windows_path(path: Path) -> str:
    """The name wine's programs know a Linux path by (wine maps / to Z:)."""
    return "Z:" + str(Path(path).absolute()).replace("/", "\\")


def locale_variables() -> dict[str, str]:
    """What every wine call of this worker runs with: the UTF-8 locale."""
    return {"LC_ALL": WINE_LOCALE}


def base_prefix(env: Mapping[str, str]) -> Path:
    """The prefix wine uses with `env`, which each .bat run copies (launchers.run_wine_env)."""
    return Path(env.get("WINEPREFIX") or Path(env.get("HOME") or Path.home()) / ".wine")


def run_variables(run_folder: Path, language: str) -> dict[str, str]:
    """The variables of one .bat run: the locale, LOCPATH (a folder of the run's own where the
    locale's name is C.UTF-8), the chcp stand-in first on PATH, DATE."""
    variables = locale_variables() | date_variable(language)
    variables["WINEPATH"] = _SHIMS_WINDOWS  # missing for a prefix without it: harmless
    locales = _locale_folder(Path(run_folder) / "locale")
    if locales is not None:
        variables["LOCPATH"] = str(locales)
    return variables


def date_variable(language: str, now: datetime | None = None) -> dict[str, str]:
    """DATE as the worker's Windows would show %DATE% today (see the module's notes)."""
    now = now or datetime.now()
    if language == "pt_BR":
        return {"DATE": now.strftime("%d/%m/%Y")}
    return {"DATE": f"{now.month}/{now.day}/{now.year}"}


def _locale_folder(folder: Path) -> Path | None:
    source = next((p for p in _C_UTF8 if p.is_dir()), None)
    if source is None:
        return None  # no C.UTF-8 here: wine's Linux strings stay 7-bit
    link = folder / WINE_LOCALE
    if not link.exists():
        folder.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(source, target_is_directory=True)
        except FileExistsError:
            pass  # made by another process meanwhile
    return folder


def apply_regional_formats(
    wine: str, env: Mapping[str, str], language: str, timeout: float = 120.0
) -> bool:
    """Give the prefix the date, time and number formats of `language` (once; a marker in the
    prefix remembers it). True when they were imported now."""
    prefix = Path(env["WINEPREFIX"])
    reg_text = _reg_file(REGIONAL_FORMATS.get(language, REGIONAL_FORMATS["en"]))
    wanted = f"{WINE_LOCALE}\n{reg_text}"  # a change of the values imports them again
    marker = prefix / _FORMATS_MARKER
    with file_lock(prefix.with_name(prefix.name + ".lock")):
        if marker.is_file() and marker.read_text(encoding="utf-8") == wanted:
            return False
        reg = prefix / "scriptflow-formats.reg"
        reg.write_text(reg_text, encoding="utf-8")
        try:
            done = subprocess.run(
                [wine, "reg", "import", windows_path(reg)],
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ScriptStartError(f"Could not set wine's regional formats: {exc}") from exc
        finally:
            reg.unlink(missing_ok=True)
        if done.returncode != 0:
            raise ScriptStartError(f"wine reg import ended with {done.returncode}")
        marker.write_text(wanted, encoding="utf-8")
    return True


def prepare_base_prefix(wine: str, env: Mapping[str, str], language: str) -> None:
    """Once per worker process, after the prefix is built: the regional formats of `language`
    and the chcp stand-in; then wait for wineserver to write the registry out, which each
    run's prefix copies."""
    prefix_env = {**env, "WINEPREFIX": str(base_prefix(env))}
    apply_regional_formats(wine, prefix_env, language)
    set_up_chcp(wine, prefix_env)
    wineserver = shutil.which("wineserver")
    if wineserver:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(
                [wineserver, "-w"],
                env=prefix_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=15,
                check=False,
            )


def set_up_chcp(wine: str, env: Mapping[str, str], timeout: float = 60.0) -> bool:
    """Put the chcp stand-in in place if wine's no-op stub still is one; True if it is."""
    drive_c = Path(env["WINEPREFIX"]) / "drive_c"
    shims = drive_c / _SHIMS
    target = shims / "chcp.exe"
    if target.is_file():
        return True
    source = drive_c / "windows" / "system32" / _NO_OP
    if not source.is_file():
        return False
    shims.mkdir(parents=True, exist_ok=True)
    candidate = shims / "chcp-candidate.exe"
    shutil.copyfile(source, candidate)
    said = shims / "chcp-candidate.out"
    try:
        # Into a file: wine's services may hold an inherited pipe open for seconds.
        with open(said, "wb") as out:
            done = subprocess.run(
                [wine, windows_path(candidate), "65001"],
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.DEVNULL,
                timeout=timeout,
                check=False,
            )
        quiet = done.returncode == 0 and not said.read_bytes().strip()
    except (OSError, subprocess.TimeoutExpired):
        quiet = False
    said.unlink(missing_ok=True)
    if not quiet:
        candidate.unlink(missing_ok=True)
        return False
    candidate.replace(target)
    return True


def _reg_file(values: Mapping[str, str]) -> str:
    lines = [
        "Windows Registry Editor Version 5.00",
        "",
        "[HKEY_CURRENT_USER\\Control Panel\\International]",
    ]
    lines += [f'"{name}"="{value}"' for name, value in values.items()]
    return "\r\n".join(lines) + "\r\n"
