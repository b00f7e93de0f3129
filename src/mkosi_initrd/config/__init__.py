"""Configuration: the settings table, the ini files with their drop-ins, and the Config value."""
