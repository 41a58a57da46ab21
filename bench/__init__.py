"""``make bench``: the seed's approach and ours, side by side (see bench/README.md)."""
