"""POSIT's learned item weights over a 2-D SVD map of the items."""

import scipy.sparse as sp

from semtail import figures
from semtail.script_io import exit_without_teardown, script_run, setup_logging

run = script_run(globals(), "Plot POSIT's item weights over a truncated-SVD map of the items.")
log = setup_logging(run, "plot_weight_landscape")

evaluations = figures.as_path_list(run.input.item_stats)
weights = figures.load_item_weights(evaluations)
train = sp.csr_matrix(sp.load_npz(run.input.train))
figure = figures.weight_landscape_figure(train, weights, run.params.dataset)
figures.save(figure, run.output.weight_landscape, run.output.weight_landscape_pdf)
log.info("%s: weight landscape of %d items from %d POSIT runs", run.params.dataset, train.shape[1], len(evaluations))
exit_without_teardown()
