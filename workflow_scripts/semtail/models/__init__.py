"""The methods, one module each (`semtail/models/<name>.py`, the method's name being the file's), and
what they share: `base` (their inputs and output), `itemitem` (the item–item learner's kernels),
`on_base` (building on a base run's model). semtail.registry lists the methods from their
DECLARATIONs; semtail.modelfile reads and writes their model files; semtail.train_job runs one.

This package imports nothing: the training loop imports `base` from it, and must not reach the
registry through it; and provenance.code_version hashes a method's imports, so an import here would
make every method depend on what it imports.
"""
