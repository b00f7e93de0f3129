# Developer entry points. Tests: tools/test.sh (CI runs it through .ci/run).

PYTHON ?= $(shell [ -x .venv/bin/python ] && echo .venv/bin/python || echo /work/venv/bin/python)

.PHONY: boot-matrix
# Every root (plain ext4, xfs, btrfs subvolume, LVM, LUKS2 via crypttab and via rd.luks.*, LVM on LUKS,
# RAID1, NFS, hibernation resume) booted with our initrd and with dracut's, one QEMU at a time; the
# results table goes to docs/BOOT-MATRIX.md. Fails if any boot fails. ~20 min under TCG.
# (The same cases as pytest: MKOSI_INITRD_BOOT_MATRIX=1 pytest tests/test_boot_matrix.py.)
boot-matrix:
	cd tests && $(abspath $(PYTHON)) -m boot.matrix --report ../docs/BOOT-MATRIX.md --extra ../docs/BOOT-MATRIX-notes.md
