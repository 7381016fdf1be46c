"""Starting a script as another Windows account: a logon with its password, then
CreateProcessAsUserW with that token.

subprocess.Popen cannot take a token, so this is its own start path. What it hands back,
`TokenProcess`, is a Popen (pid, stdout, stderr, poll, wait) the runner uses like any other;
its process was started suspended and put in a Job Object before its first instruction, so
the whole tree is in the job (unlike `_Job.for_process`, nothing can escape).

The logon is a batch one (the account needs "Log on as a batch job"); without that right an
interactive one. CreateProcessAsUserW needs the worker to hold SeAssignPrimaryTokenPrivilege and
SeIncreaseQuotaPrivilege: a service running as LocalSystem does. The account's profile folders
(USERPROFILE, APPDATA...) come from its token and override the scrubbed environment's.
The password is a parameter only: never logged, never in argv or the environment.
Imported on Windows only."""

from __future__ import annotations

import ctypes
import msvcrt
import os
import subprocess
import sys
from ctypes import wintypes
from pathlib import Path

from scriptflow_prefect.execution.models import ScriptStartError

# Imported on Windows only; mypy --platform linux skips the rest of this module.
assert sys.platform == "win32"
from scriptflow_prefect.execution.windows import Job  # noqa: E402

_LOGON_BATCH, _LOGON_INTERACTIVE, _PROVIDER_DEFAULT = 4, 2, 0
_ERROR_LOGON_TYPE_NOT_GRANTED = 1385
_CREATE_SUSPENDED = 0x4
_CREATE_UNICODE_ENVIRONMENT = 0x400
_STARTF_USESTDHANDLES = 0x100
_INFINITE, _WAIT_TIMEOUT = 0xFFFFFFFF, 0x102
# What the account's token says about where it lives: these win over the worker's values.
_PROFILE_VARIABLES = (
    "USERPROFILE",
    "APPDATA",
    "LOCALAPPDATA",
    "HOMEDRIVE",
    "HOMEPATH",
    "HOMESHARE",
    "USERNAME",
    "USERDOMAIN",
    "TEMP",
    "TMP",
)


class _StartupInfo(ctypes.Structure):
    _fields_ = [
        ("cb", wintypes.DWORD),
        ("lpReserved", wintypes.LPWSTR),
        ("lpDesktop", wintypes.LPWSTR),
        ("lpTitle", wintypes.LPWSTR),
        ("dwX", wintypes.DWORD),
        ("dwY", wintypes.DWORD),
        ("dwXSize", wintypes.DWORD),
        ("dwYSize", wintypes.DWORD),
        ("dwXCountChars", wintypes.DWORD),
        ("dwYCountChars", wintypes.DWORD),
        ("dwFillAttribute", wintypes.DWORD),
        ("dwFlags", wintypes.DWORD),
        ("wShowWindow", wintypes.WORD),
        ("cbReserved2", wintypes.WORD),
        ("lpReserved2", wintypes.LPVOID),
        ("hStdInput", wintypes.HANDLE),
        ("hStdOutput", wintypes.HANDLE),
        ("hStdError", wintypes.HANDLE),
    ]


class _ProcessInformation(ctypes.Structure):
    _fields_ = [
        ("hProcess", wintypes.HANDLE),
        ("hThread", wintypes.HANDLE),
        ("dwProcessId", wintypes.DWORD),
        ("dwThreadId", wintypes.DWORD),
    ]


def _dlls() -> tuple[ctypes.WinDLL, ctypes.WinDLL, ctypes.WinDLL]:
    advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    userenv = ctypes.WinDLL("userenv", use_last_error=True)
    handle_p = ctypes.POINTER(wintypes.HANDLE)
    advapi32.LogonUserW.argtypes = [
        wintypes.LPCWSTR,
        wintypes.LPCWSTR,
        wintypes.LPCWSTR,
        wintypes.DWORD,
        wintypes.DWORD,
        handle_p,
    ]
    advapi32.LogonUserW.restype = wintypes.BOOL
    advapi32.CreateProcessAsUserW.argtypes = [
        wintypes.HANDLE,
        wintypes.LPCWSTR,
        wintypes.LPWSTR,
        wintypes.LPVOID,
        wintypes.LPVOID,
        wintypes.BOOL,
        wintypes.DWORD,
        wintypes.LPVOID,
        wintypes.LPCWSTR,
        ctypes.POINTER(_StartupInfo),
        ctypes.POINTER(_ProcessInformation),
    ]
    advapi32.CreateProcessAsUserW.restype = wintypes.BOOL
    userenv.CreateEnvironmentBlock.argtypes = [
        ctypes.POINTER(wintypes.LPVOID),
        wintypes.HANDLE,
        wintypes.BOOL,
    ]
    userenv.CreateEnvironmentBlock.restype = wintypes.BOOL
    userenv.DestroyEnvironmentBlock.argtypes = [wintypes.LPVOID]
    userenv.DestroyEnvironmentBlock.restype = wintypes.BOOL
    kernel32.ResumeThread.argtypes = [wintypes.HANDLE]
    kernel32.ResumeThread.restype = wintypes.DWORD
    kernel32.TerminateProcess.argtypes = [wintypes.HANDLE, wintypes.UINT]
    kernel32.TerminateProcess.restype = wintypes.BOOL
    kernel32.WaitForSingleObject.argtypes = [wintypes.HANDLE, wintypes.DWORD]
    kernel32.WaitForSingleObject.restype = wintypes.DWORD
    kernel32.GetExitCodeProcess.argtypes = [wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD)]
    kernel32.GetExitCodeProcess.restype = wintypes.BOOL
    kernel32.CloseHandle.argtypes = [wintypes.HANDLE]
    kernel32.CloseHandle.restype = wintypes.BOOL
    return advapi32, kernel32, userenv


def _split_account(account: str) -> tuple[str, str | None]:
    """(user, domain): ``DOMAIN\\user``; ``user@domain`` (a UPN: no domain); ``user`` (local)."""
    if "\\" in account:
        domain, user = account.split("\\", 1)
        return user, domain
    return account, None if "@" in account else "."


def _logon(advapi32: ctypes.WinDLL, account: str, password: str) -> int:
    user, domain = _split_account(account)
    token = wintypes.HANDLE()
    for kind in (_LOGON_BATCH, _LOGON_INTERACTIVE):
        if advapi32.LogonUserW(user, domain, password, kind, _PROVIDER_DEFAULT, token):
            return int(token.value or 0)
        error = ctypes.get_last_error()
        if error != _ERROR_LOGON_TYPE_NOT_GRANTED:
            break
    # The message names the account and the Windows error, never the password.
    raise ScriptStartError(f"Could not log on as {account!r}: {ctypes.FormatError(error)}")


def _token_env(userenv: ctypes.WinDLL, token: int, env: dict[str, str]) -> dict[str, str]:
    """The scrubbed `env`, with the account's profile variables from its token."""
    block = wintypes.LPVOID()
    if not userenv.CreateEnvironmentBlock(ctypes.byref(block), token, False):
        return dict(env)
    try:
        own: dict[str, str] = {}
        address = block.value or 0
        while entry := ctypes.wstring_at(address):
            name, _sep, value = entry[1:].partition("=")  # names like "=C:" start with "="
            own[entry[0] + name] = value
            address += (len(entry) + 1) * ctypes.sizeof(ctypes.c_wchar)
    finally:
        userenv.DestroyEnvironmentBlock(block)
    merged = dict(env)
    upper = {key.upper(): key for key in own}
    for name in _PROFILE_VARIABLES:
        if name in upper:
            for key in [k for k in merged if k.upper() == name]:
                del merged[key]
            merged[upper[name]] = own[upper[name]]
    return merged


def _env_block(env: dict[str, str]) -> ctypes.Array[ctypes.c_wchar]:
    text = "".join(f"{k}={v}\0" for k, v in sorted(env.items(), key=lambda i: i[0].upper()))
    return ctypes.create_unicode_buffer(text + "\0", len(text) + 2)  # ends in two NULs


class TokenProcess(subprocess.Popen[bytes]):
    """A process started with CreateProcessAsUserW, seen by the runner as a Popen."""

    def __init__(self, args: str, pid: int, handle: int, stdout: int, stderr: int, job: Job):
        # Popen.__init__ would start a process: only the attributes the runner reads are set.
        self.args = args
        self.pid = pid
        self.returncode = None  # type: ignore[assignment]
        self.stdin = None
        self.stdout = os.fdopen(stdout, "rb", buffering=0)
        self.stderr = os.fdopen(stderr, "rb", buffering=0)
        self.job: Job | None = job
        self._process = handle

    def poll(self) -> int | None:
        return self._wait(0)

    def wait(self, timeout: float | None = None) -> int:
        ms = _INFINITE if timeout is None else int(timeout * 1000)
        code = self._wait(ms)
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return code

    def _wait(self, ms: int) -> int | None:
        if self.returncode is not None:
            return self.returncode
        _advapi32, kernel32, _userenv = _dlls()
        if kernel32.WaitForSingleObject(self._process, ms) == _WAIT_TIMEOUT:
            return None
        code = wintypes.DWORD()
        kernel32.GetExitCodeProcess(self._process, ctypes.byref(code))
        self.returncode = int(code.value)
        kernel32.CloseHandle(self._process)
        self._process = 0
        return self.returncode

    def kill(self) -> None:
        if self._process:
            _dlls()[1].TerminateProcess(self._process, 1)

    terminate = kill

    def __del__(self) -> None:
        # Popen's would look at attributes its __init__ sets; the runner closes the job.
        pass


def start_as_account(
    command: list[str] | str, cwd: Path, env: dict[str, str], account: str, password: str
) -> TokenProcess:
    """Start `command` as `account` (logged on with `password`) in its own Job Object, with
    stdin on NUL and stdout/stderr on pipes; no console window, a process group of its own."""
    advapi32, kernel32, userenv = _dlls()
    cmdline = command if isinstance(command, str) else subprocess.list2cmdline(command)
    token = _logon(advapi32, account, password)
    pipes = [os.pipe(), os.pipe()]
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        for _read, write in pipes:
            os.set_inheritable(write, True)  # the child's ends only; ours stay private
        os.set_inheritable(devnull, True)
        startup = _StartupInfo()
        startup.cb = ctypes.sizeof(startup)
        startup.dwFlags = _STARTF_USESTDHANDLES
        startup.hStdInput = msvcrt.get_osfhandle(devnull)
        startup.hStdOutput = msvcrt.get_osfhandle(pipes[0][1])
        startup.hStdError = msvcrt.get_osfhandle(pipes[1][1])
        info = _ProcessInformation()
        flags = (
            _CREATE_SUSPENDED
            | _CREATE_UNICODE_ENVIRONMENT
            | subprocess.CREATE_NEW_PROCESS_GROUP
            | subprocess.CREATE_NO_WINDOW
        )
        block = _env_block(_token_env(userenv, token, env))
        line = ctypes.create_unicode_buffer(cmdline)
        if not advapi32.CreateProcessAsUserW(
            token, None, line, None, None, True, flags, block, str(cwd), startup, info
        ):
            error = ctypes.get_last_error()
            raise ScriptStartError(f"Could not start {cmdline!r} as {account!r}: {error}")
    except BaseException:
        for read, _write in pipes:
            os.close(read)
        raise
    finally:
        for _read, write in pipes:
            os.close(write)  # the child holds them now: EOF comes when it (and its tree) exit
        os.close(devnull)
        kernel32.CloseHandle(token)
    job = Job.for_handle(info.hProcess)
    if job is None:
        kernel32.TerminateProcess(info.hProcess, 1)
        kernel32.CloseHandle(info.hThread)
        kernel32.CloseHandle(info.hProcess)
        for read, _write in pipes:
            os.close(read)
        raise ScriptStartError(f"Could not put {cmdline!r} in a Job Object")
    kernel32.ResumeThread(info.hThread)
    kernel32.CloseHandle(info.hThread)
    return TokenProcess(
        cmdline, int(info.dwProcessId), info.hProcess, pipes[0][0], pipes[1][0], job
    )
