"""The configuration file: parsed once into typed, immutable objects."""
