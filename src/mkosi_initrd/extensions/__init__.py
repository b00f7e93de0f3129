"""System extensions for the initrd: `mkosi-initrd sysext` (content.py → tree.py → ddi.py, sysext.py)."""
