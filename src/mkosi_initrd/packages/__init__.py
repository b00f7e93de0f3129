"""Package databases and what is read from them: the installed packages, their closure, their files."""
