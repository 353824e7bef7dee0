"""RL: the Q-learning agent's table for one market and day (assets, definitions)."""
