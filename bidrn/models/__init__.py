"""Hand4Whole and BiDRN: encoders, heads, the whole-body network and the registry of named configs."""
