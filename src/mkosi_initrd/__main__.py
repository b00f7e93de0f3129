from mkosi_initrd.cli import main

raise SystemExit(main())
