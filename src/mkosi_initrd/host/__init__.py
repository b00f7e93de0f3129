"""The host: what a host-only build probes (sysfs, procfs, the root's block stack) and what it carries
from the host's configuration (crypttab, keymap, resume, the profiles' files)."""
