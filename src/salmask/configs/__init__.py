"""Configuration presets shipped with salmask (YAML)."""
