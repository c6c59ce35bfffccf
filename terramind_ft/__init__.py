"""terramind-ft: fine-tune and run the TerraMind Earth-observation foundation model from YAML configs."""

__version__ = "0.1.0"
