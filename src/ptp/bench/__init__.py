"""Side-by-side benchmarks of decoding methods: same process, same prompts, interleaved, reported as ratios."""
