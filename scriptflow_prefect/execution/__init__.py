"""Starting a script's process, streaming its output and stopping its whole process tree."""
