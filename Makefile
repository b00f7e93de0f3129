# Developer entry points. Tests: tools/test.sh (CI runs it through .ci/run).

PYTHON ?= $(shell [ -x .venv/bin/python ] && echo .venv/bin/python || echo /work/venv/bin/python)

.PHONY: boot-matrix
# Every root (plain, xfs, btrfs subvolume, LVM, LUKS2 via crypttab and via rd.luks.*, LVM on LUKS, RAID1)
# booted with our initrd and with dracut's; the table goes to docs/BOOT-MATRIX.md. ~15 min under TCG.
boot-matrix:
	MKOSI_INITRD_BOOT_MATRIX=1 $(PYTHON) -m pytest -ra tests/test_boot_matrix.py
	cd tests && $(abspath $(PYTHON)) -m boot.matrix --report ../docs/BOOT-MATRIX.md --extra ../docs/BOOT-MATRIX-notes.md
