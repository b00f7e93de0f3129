"""Package databases (rpm, dpkg) and what is read from them: the installed packages, their closure,
their files."""
