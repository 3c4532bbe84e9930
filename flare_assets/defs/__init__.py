"""Asset definitions, one module per stage of the method."""
