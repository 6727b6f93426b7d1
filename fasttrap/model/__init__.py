"""What is trained: the MLP spec and its flat parameter layout, any torch module (:mod:`.torchmodel`), the aging
paper's networks by name (:mod:`.zoo`), the data, and the random streams."""
