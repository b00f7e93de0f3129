"""The kernel-install plugin: the policy (what to do for each layout), rival plugins, install.conf,
prebuilt initrds."""
