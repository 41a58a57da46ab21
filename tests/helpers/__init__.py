"""What tests share besides fixtures (those are in tests/conftest.py): config composition, small data, tiny models."""
