"""The build: plan, image and UKI written to their outputs, with the cache of earlier results in front."""
