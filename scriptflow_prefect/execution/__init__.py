"""Starting a script's process, streaming its output and stopping its whole process tree.

`process.run_script_process` is the entry point; `launchers` (the command line: python, cmd.exe
or wine), `environment` (scrubbed env, the scripts' virtualenv), `workdir`, `streams` (pipes to
lines, `\\r` as on a terminal), `output_hook` (Python's stdout and stderr in order, over one
pipe), `tree` (the tree kill), `models` (outcomes, errors). A .bat under wine: `wine` (prefix,
locale, regional formats), `bat_text` (its encoding), `bat_exit_code` (its whole exit code),
`bat_commands` (commands wine lacks). What differs by OS lives in `posix.py` and `windows.py`,
which have the same names; each concern picks one in one place. Running as another
Windows account (a logon with its password) is `windows_logon.py`."""
