"""`python3 -m mkosi_initrd.kernel_install`: what install.d/50-mkosi-initrd.install runs."""

from mkosi_initrd.kernel_install.plugin import main

raise SystemExit(main())
