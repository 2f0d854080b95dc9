"""The advisor: exact ground truth, measurements, the cost model, the choice, the
peers, the data sets, ``inspect`` and the HTML report. Imports every layer below it."""
