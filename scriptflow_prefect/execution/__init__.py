"""Starting a script's process, streaming its output and stopping its whole process tree.

`process.run_script_process` is the entry point; `launchers` (the command line: python, cmd.exe
or wine), `environment` (scrubbed env, the scripts' virtualenv), `workdir`, `streams` (pipes to
lines), `tree` (the tree kill), `models` (outcomes, errors). What differs by OS lives in
`posix.py` and `windows.py`, which have the same names; each concern picks one in one place."""
