"""Real Transformers: the training experiment's classifiers and data, and the probes of library architectures.

Nothing here imports the CLI, the run store or the executors; checkpoints are plain
dictionaries of arrays that the runtime writes.
"""
