"""Search engines: flip graphs (and later MCTS) over decompositions."""
