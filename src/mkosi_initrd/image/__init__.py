"""The image: entries to a newc cpio, compressed, early microcode in front, written atomically; and
read back as the kernel reads it."""
