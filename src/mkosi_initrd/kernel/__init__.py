"""The kernel's part of the plan: module index, selection and closure, firmware, the regenerated index."""
