"""Side-by-side benchmarks of decoding methods (DESIGN §5)."""
