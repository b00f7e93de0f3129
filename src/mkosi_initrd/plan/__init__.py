"""The plan: everything that goes into one initrd, and why; a pure value (model.py), put together from
the parts the planner's steps contribute (parts.py)."""
