"""What is trained: the MLP spec and its flat parameter layout, the data, and the random streams."""
