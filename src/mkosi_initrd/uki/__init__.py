"""Unified Kernel Images: options resolved before building, PE assembly on systemd-stub, signing,
inspection."""
