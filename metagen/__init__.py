"""metagen: measure how language models judge each other's text."""

import os

# Idle OpenMP threads sleep instead of spinning (must precede torch's libgomp load).
# On a shared machine spinning threads take the core a preempted peer needs and every
# parallel op stalls at its barrier: measured 4-5x slower generation and scoring here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
