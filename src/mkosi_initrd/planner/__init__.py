"""The planner: a Config becomes a Plan (plan/) in steps (steps.py): the packages, their dlopen()ed
libraries (dlopen.py), the kernel part, the host part, then the generated entries (generated.py,
accounts.py, manifest.py) over all of it."""
