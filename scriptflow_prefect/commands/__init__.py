"""What `scriptflow ...` runs: the command line and the stack it starts.

The only code that may import every part (the composition root)."""
