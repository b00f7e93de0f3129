"""The plan: the pure value the image is written from, and the planner that makes it from a Config."""
