"""Running the product: dependency health, the worker supervisor, migrations."""
